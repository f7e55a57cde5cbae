"""Racing on prompts: the split, the merged record against one evaluation on every prompt, and the drop rule on
constructed fronts where the right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.heuristics import fora
from ecad_search.models import get_model
from ecad_search.pool.base import record_of
from ecad_search.search.racing import MIN_RACE_PROMPTS, Rival, beaten, race_split, rival_of

PROMPTS = tuple(f"a photo of object number {i}" for i in range(20))


def settings(prompts: tuple[str, ...] = PROMPTS) -> EvaluationSettings:
    return EvaluationSettings("m", "fidelity", prompts, 2, 4, 4.5, 32)


def test_the_race_is_a_spread_share_and_the_rest_is_every_other_prompt() -> None:
    split = race_split(settings(), 0.25)
    assert split is not None
    assert split.race_positions == (0, 3, 5, 8, 11, 14, 16, 19), "at least MIN_RACE_PROMPTS, spread evenly"
    assert split.race.prompts == tuple(PROMPTS[i] for i in split.race_positions)
    assert sorted(split.race.prompts + split.rest.prompts) == sorted(PROMPTS)
    assert len(split.rest.prompts) == 12 and split.race.key() != split.rest.key() != settings().key()
    assert split.race_units(list(range(20))) == list(split.race_positions)


@pytest.mark.parametrize(("share", "count"), [(0.0, 20), (0.25, MIN_RACE_PROMPTS), (1.0, 20)])
def test_no_race_without_a_share_or_without_prompts_left_for_the_rest(share: float, count: int) -> None:
    assert race_split(settings(PROMPTS[:count]), share) is None


def test_a_merged_record_is_one_evaluation_on_every_prompt(tiny_pixart_dir: Path) -> None:
    """The race and the rest generated apart, then merged, give every prompt the score one evaluation on all
    prompts gives it, and the same loss and cost."""
    spec = get_model(str(tiny_pixart_dir))
    full = EvaluationSettings(spec.name, "fidelity", PROMPTS, 1, 4, spec.guidance_scale, spec.resolution)
    split = race_split(full, 0.3)
    assert split is not None
    evaluator = Evaluator(spec, full)
    mask = fora(evaluator.template.groups, 4, 2)
    whole = record_of("d", mask, evaluator)
    parts = [record_of("d", mask, evaluator.sibling(part)) for part in (split.race, split.rest)]
    merged = split.merged(*parts)
    assert merged.scores["prompt_scores"] == pytest.approx(whole.scores["prompt_scores"], abs=1e-9)
    assert merged.quality_loss == pytest.approx(whole.quality_loss, abs=1e-12) and whole.quality_loss > 0
    assert merged.cost == pytest.approx(whole.cost) and merged.macs == pytest.approx(whole.macs)
    with pytest.raises(ValueError, match="two masks"):
        split.merged(parts[0], record_of("e", mask, evaluator.sibling(split.rest)))


def front_of(losses: list[float], costs: list[float], prompts: np.ndarray) -> list[Rival]:
    """Front members whose per-prompt scores are the prompts' difficulty shifted by their loss."""
    return [Rival(loss, cost, list(1 - loss + prompts)) for loss, cost in zip(losses, costs, strict=True)]


def test_racing_never_drops_a_candidate_that_a_full_evaluation_puts_on_the_front() -> None:
    """Constructed case: 16 race prompts out of 64 (per-prompt difficulty shared by every mask, as common
    random numbers make it; 0.01 of noise per prompt) and a front of three. Every candidate whose loss over
    all 64 prompts beats its rival's (the best member costing no more) by more than the race's standard error
    (0.0025), however its race prompts fell, is finished; candidates worse than their rival by a margin the
    race can see are dropped, and the cheapest candidate always goes on. (Within one standard error, a
    candidate ties its rival: no subset can promise to keep it, and losing it loses a tie.)"""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 0.05, 64)
    race = np.arange(0, 64, 4)
    losses, costs = [0.30, 0.20, 0.10], [0.3, 0.5, 0.7]
    front = front_of(losses, costs, difficulty[race])
    would_enter, hopeless = 0, 0
    for trial in range(400):
        cost = rng.choice([0.35, 0.55, 0.8])
        rival = rival_of(cost, front)
        assert rival is not None and rival.loss == losses[int(np.searchsorted(costs, cost)) - 1]
        shift = rng.uniform(-0.03, 0.06)
        scores = 1 - rival.loss - shift + difficulty + rng.normal(0, 0.01, 64)
        full_loss = 1 - scores.mean()
        dropped = beaten(scores[race], cost, front)
        if full_loss < rival.loss - 0.0025:
            would_enter += 1
            assert not dropped, f"trial {trial}: full loss {full_loss:.4f} beats {rival.loss} but was dropped"
        elif shift > 0.02:
            hopeless += 1
            assert dropped, f"trial {trial}: {shift:.3f} worse than its rival on every prompt, yet finished"
    assert would_enter > 50 and hopeless > 100
    assert not beaten(list(1 - 0.9 + difficulty[race]), 0.1, front), "nothing on the front costs as little"


def test_the_rival_is_the_best_member_that_costs_no_more() -> None:
    """A candidate worse than a dearer member but better than every cheaper one is not raced out."""
    prompts = np.zeros(16)
    front = front_of([0.30, 0.10], [0.3, 0.7], prompts)
    candidate = list(1 - 0.2 + prompts + np.linspace(-0.001, 0.001, 16))
    assert rival_of(0.5, front) == front[0]
    assert not beaten(candidate, 0.5, front)
    assert beaten(candidate, 0.7, front)
