"""The search: NSGA-II (pymoo, ask/tell) over cache masks, persisted and resumable (`run.SearchRun`), and
the local search at one budget (`budget`, `budget_run`). Requests are checked by `ecad_search.app`."""
