"""Learned schedules against FORA and every online policy, at equal budgets, on held-out images:
`methods` (what each method scores), `budgets` (pure: best point per budget, winners, hypervolume), `runner`
(scoring through the memo, timing), `report` (markdown, CSV, plot)."""
