"""Claims in every family: the figures each evaluation stores, the fewer-steps baseline, the digits judge, and
how older evaluations gain their families.

Real parts throughout: the bundled digits pipeline, its classifier and judge, and a real SQLite store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ecad_search.evaluation import Evaluation, EvaluationSettings, Evaluator
from ecad_search.families import FAMILIES_KEY
from ecad_search.fewer_steps import FewerSteps, fewer_steps_within
from ecad_search.heuristics import fora
from ecad_search.metrics.reward import digits_split, load_digit_classifier, load_real_digits
from ecad_search.models import get_model
from ecad_search.models.digits.judge import DigitJudge, load_judge, train_judge
from ecad_search.pool import LocalPool, genome_text
from ecad_search.search.splits import SplitScorer
from ecad_search.store import EvaluationRecord, Store
from ecad_search.verdict import Margins, judge_claim

PROMPTS = ("a handwritten digit 3", "a handwritten digit 8")
FAMILIES = [("quality", "quality", ""), ("fidelity", "psnr_db", "dB"), ("adherence", "adherence", "points")]


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    settings = EvaluationSettings("digits", "frechet", PROMPTS, 3, 20, 1.25, 8)
    return Evaluator(get_model("digits"), settings)


def test_every_evaluation_stores_every_family_per_image(evaluator: Evaluator) -> None:
    uncached = evaluator.evaluate(evaluator.template).figures[FAMILIES_KEY]
    assert uncached["psnr_db"] == [100.0] * 6 and uncached["ssim"] == pytest.approx([1.0] * 6)
    assert uncached["quality"] == pytest.approx([1.0] * 3), "one Fréchet unit per seed; no rise over itself"
    assert uncached["quality_judge"] == pytest.approx([1.0] * 3), "the second judge: no rise either"
    assert set(uncached["adherence"]) <= {0.0, 100.0} and len(uncached["adherence"]) == 6
    cached = evaluator.evaluate(fora(evaluator.template.groups, 20, 4)).figures[FAMILIES_KEY]
    assert all(20 < value < 60 for value in cached["psnr_db"]), "FORA-4 moves every image, not beyond recognition"
    assert sum(cached["quality"]) < 3, "FORA-4 raises the Fréchet distance"


def transformer_flops(evaluator: Evaluator, run: Callable[[], object]) -> list[int]:
    """The FLOPs torch's own counter sees in each transformer call of `run()` (hooks around every call)."""
    transformer, counted, open_counters = evaluator.pipe.transformer, [], []

    def enter(*_: object) -> None:
        open_counters.append(FlopCounterMode(display=False))
        open_counters[-1].__enter__()

    def leave(*_: object) -> None:
        counter = open_counters.pop()
        counter.__exit__(None, None, None)
        counted.append(counter.get_total_flops())

    hooks = [transformer.register_forward_pre_hook(enter), transformer.register_forward_hook(leave)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return counted


def test_fewer_steps_runs_the_pipeline_at_k_steps_and_costs_what_it_ran(evaluator: Evaluator) -> None:
    full = transformer_flops(evaluator, lambda: evaluator.generate(None))
    scored: list[Evaluation] = []
    fewer = transformer_flops(evaluator, lambda: scored.append(evaluator.evaluate(FewerSteps(7))))
    calls = len(evaluator.chunks)
    assert len(full) == 20 * calls and len(fewer) == 7 * calls, "the pipeline ran 7 steps, with its own scheduler"
    assert len(set(full + fewer)) == 1, "every transformer call costs the same"
    assert scored[0].macs / evaluator.full_macs == pytest.approx(sum(fewer) / sum(full), abs=1e-12)
    assert scored[0].cost == pytest.approx(0.35) and scored[0].figures[FAMILIES_KEY]["psnr_db"][0] < 100
    assert fewer_steps_within(0.35, 20) == FewerSteps(7) and fewer_steps_within(0.04, 20) is None
    with pytest.raises(ValueError, match="positive integer"):
        FewerSteps(0)


def test_the_judge_shares_no_weights_with_the_metrics_classifier() -> None:
    judge, classifier = load_judge(), load_digit_classifier()
    assert isinstance(judge, DigitJudge) and not any(
        isinstance(module, torch.nn.Conv2d) for module in judge.modules()
    ), "another architecture: no convolution"
    for theirs in classifier.state_dict().values():
        for ours in judge.state_dict().values():
            assert ours.shape != theirs.shape or not torch.equal(ours, theirs)
    retrained, stats = train_judge()
    assert all(
        torch.equal(a, b) for a, b in zip(retrained.state_dict().values(), judge.state_dict().values(), strict=True)
    )
    images, labels = load_real_digits()
    _, held_out = digits_split()
    with torch.no_grad():
        read = judge(images[held_out]).argmax(dim=1)
    accuracy = (read == labels[held_out]).float().mean().item()
    assert accuracy == pytest.approx(stats["held_out_accuracy"]) and accuracy > 0.95


def test_a_claim_is_better_only_when_no_family_falls_behind_its_margin() -> None:
    spread = [0.2, -0.1, 0.0, -0.1]
    baseline = {"quality": [1.0] * 4, "psnr_db": [34 + s for s in spread], "adherence": [99 + s for s in spread]}

    def verdict(quality: float, psnr: float, adherence: float, primary: str = "quality") -> str:
        rival = {
            "quality": [1.0 + quality + s / 10 for s in spread],
            "psnr_db": [34 + psnr + s for s in spread],
            "adherence": [99 + adherence + s for s in spread],
        }
        claim = judge_claim(rival, baseline, FAMILIES, primary, Margins(), 1.0)
        assert claim is not None
        return claim.verdict

    assert verdict(0.05, 0.0, 0.0) == "better"
    assert verdict(0.05, -3.0, 0.0) == "trade-off", "3 dB of PSNR lost"
    assert verdict(0.05, 0.0, -2.0) == "trade-off", "2 points of adherence lost"
    assert verdict(-0.05, 0.0, 0.0) == "worse" and verdict(0.0, 0.0, 0.0) == "tie"
    assert verdict(-0.5, 2.0, 0.0, primary="fidelity") == "better", "fidelity first: 0.5 FD is within the 1 FD margin"
    assert verdict(-2.0, 2.0, 0.0, primary="fidelity") == "trade-off", "2 FD of quality lost for 2 dB"
    assert judge_claim({"psnr_db": [1.0]}, {"psnr_db": [2.0]}, FAMILIES, "quality", Margins(), 1.0) is None


def test_older_evaluations_gain_their_families_when_a_claim_needs_them(tmp_path: Path, evaluator: Evaluator) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    schedule = fora(evaluator.template.groups, 20, 3)
    key = evaluator.settings.key()
    old = EvaluationRecord(
        schedule.digest(), genome_text(schedule), 0.5, 0.35, 1.0, None, {"prompt_scores": [0.5]}, 1.0
    )
    store.record_evaluations(key, [old])
    pool = LocalPool(get_model("digits"))
    assert SplitScorer(evaluator.settings, store, pool).scores({old.digest: schedule})[old.digest] == old
    filled = SplitScorer(evaluator.settings, store, pool, needs_families=True).scores({old.digest: schedule})
    assert FAMILIES_KEY in filled[old.digest].scores
    stored = store.lookup(key, [old.digest])[old.digest]
    assert stored.quality_loss == 0.5 and stored.scores["prompt_scores"] == [0.5], "what was stored stays"
    assert stored.scores[FAMILIES_KEY] == filled[old.digest].scores[FAMILIES_KEY]
    assert store.count_evaluations(key) == 1
