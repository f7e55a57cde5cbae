"""Shared prefixes: the plan on masks whose tree is known, and bit-identical images on real pipelines (tiny
PixArt-α, the digits model and tiny FLUX), with enough memory, with too little, and over several pipeline
calls per evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.heuristics import fora
from ecad_search.models import block_groups, get_model
from ecad_search.runtime.prefix import PrefixTape, component_keys, prefix_groups, prefix_plan
from ecad_search.schedule import CacheSchedule

STEPS = 6


def moved(schedule: CacheSchedule, step: int, column: int) -> CacheSchedule:
    """The schedule with one component (a column of `step_rows`) flipped at one step: a one-move neighbour."""
    genome = schedule.genome().copy()
    gene = (step - 1) * schedule.genes_per_step + column
    genome[gene] = ~genome[gene]
    return schedule.with_genome(genome)


def candidates(template: CacheSchedule) -> list[CacheSchedule]:
    """FORA-2 and its one-move neighbours at steps 4, 2 and 3 (listed out of tree order), FORA-3, and two
    random masks: forks at several depths, in rising and falling order."""
    base = fora(template.groups, STEPS, 2)
    rng = np.random.default_rng(0)
    randoms = [template.with_genome(rng.random(template.genome_length) < 0.6) for _ in range(2)]
    return [moved(base, 4, 0), base, moved(base, 2, 1), fora(template.groups, STEPS, 3), moved(base, 3, 0), *randoms]


def layout() -> CacheSchedule:
    """The digits model's all-compute layout at STEPS steps, without loading the model."""
    return CacheSchedule.all_compute(block_groups(get_model("digits")), STEPS)


def test_the_plan_runs_neighbours_next_to_each_other_and_forks_them_where_they_differ() -> None:
    """FORA-2 computes at steps 0, 2 and 4. Its neighbours that stop computing component 0 at step 2 or 4 sort
    before it, the one that computes it at step 3 after it: N2, N4, FORA-2, N3, forking at 2, 4 and 3."""
    base = fora(layout().groups, STEPS, 2)
    n4, n2, n3 = moved(base, 4, 0), moved(base, 2, 0), moved(base, 3, 0)
    plan = prefix_plan([n4, base, n2, n3])
    assert [index for index, _ in plan] == [2, 0, 1, 3]
    links = [link for _, link in plan]
    assert [link.replay for link in links] == [0, 2, 4, 3]
    assert [link.record for link in links] == [4, 4, 3, 0], "a run records what any later candidate replays"
    # N4 forks from N2 at step 2, where N4 computes everything: an empty snapshot. FORA-2 (at 4) and N3 (at 3)
    # fork from N4, the last run to compute steps 3 and 4 on their path; each reuses its step's components.
    reused_at_3 = frozenset(key for key in component_keys(base) if key != (0, 0, 0))
    assert links[0].forks == {2: frozenset()}
    assert links[1].forks == {3: reused_at_3, 4: frozenset()}
    assert links[1].tracked == reused_at_3
    assert [link.drops for link in links] == [(), (2,), (4,), (3,)], "each dropped once its last user ran"


def test_the_same_mask_twice_takes_every_step_from_the_tape() -> None:
    base = fora(layout().groups, STEPS, 2)
    plan = prefix_plan([base, base])
    assert [link.replay for _, link in plan] == [0, STEPS]
    assert all(not link.forks for _, link in plan) and plan[0][1].record == STEPS


def test_groups_for_workers_keep_neighbours_in_the_tree_together() -> None:
    """What Ray workers are given: the plan's order cut into groups of near-equal size. FORA-3 and its
    neighbour sort first (FORA-3 reuses at step 2, where FORA-2 computes), then N2, N4, FORA-2, N3."""
    groups = layout().groups
    base, other = fora(groups, STEPS, 2), fora(groups, STEPS, 3)
    batch = [other, moved(base, 4, 0), moved(other, 5, 0), base, moved(base, 2, 0), moved(base, 3, 0)]
    assert prefix_groups(batch, 2) == [[0, 2, 4], [1, 3, 5]]
    assert prefix_groups(batch, 4) == [[0, 2], [4, 1], [3], [5]], "sizes within one of each other"
    assert prefix_groups(batch[:2], 8) == [[0], [1]], "never more groups than masks"
    assert prefix_groups([], 3) == []


@pytest.fixture(params=["tiny-pixart", "digits", "tiny-flux"])
def model(request: pytest.FixtureRequest) -> str:
    if request.param == "digits":
        return "digits"
    return str(request.getfixturevalue("tiny_pixart_dir" if request.param == "tiny-pixart" else "tiny_flux_dir"))


def test_shared_prefixes_give_bit_identical_images_in_fewer_transformer_calls(model: str) -> None:
    spec = get_model(model)
    prompts = tuple(f"a handwritten digit {d}" for d in range(3))
    # Two images per prompt and two per pipeline call: three pipeline calls per evaluation, each its own tape.
    settings = EvaluationSettings(spec.name, "fidelity", prompts, 2, STEPS, spec.guidance_scale, 16, batch_size=2)
    evaluator = Evaluator(spec, settings)
    schedules = candidates(evaluator.template)
    alone = [evaluator.generate(schedule)[0] for schedule in schedules]
    calls = counted_transformer_calls(evaluator)

    shared = sum(link.replay for _, link in prefix_plan(schedules)) * len(evaluator.chunks)
    replayed = {}
    for budget in (2**30, 2**12, 1):
        tape = PrefixTape(budget)
        calls.clear()
        for index, link in prefix_plan(schedules):
            images, _ = evaluator.generate(schedules[index], link, tape)
            assert torch.equal(images, alone[index]), f"candidate {index} differs from its independent run"
            tape.drop(link.drops)
        assert len(calls) == len(schedules) * STEPS * len(evaluator.chunks) - tape.replayed_steps
        assert tape.bytes <= budget
        replayed[budget] = tape.replayed_steps
    assert replayed[2**30] == shared and replayed[1] == 0, "all that is shared with memory enough, none without"


def counted_transformer_calls(evaluator: Evaluator) -> list[int]:
    """A list that grows at every real run of the transformer (its first block runs once per call)."""
    calls: list[int] = []
    evaluator.pipe.transformer.transformer_blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_evaluate_many_scores_as_evaluate_does_and_leaves_the_evaluator_as_it_was(tiny_pixart_dir: Path) -> None:
    spec = get_model(str(tiny_pixart_dir))
    prompts = tuple(f"a photo of object number {i}" for i in range(4))
    settings = EvaluationSettings(spec.name, "fidelity", prompts, 1, STEPS, spec.guidance_scale, spec.resolution)
    evaluator = Evaluator(spec, settings)
    schedules = candidates(evaluator.template)
    alone = [evaluator.evaluate(schedule) for schedule in schedules]
    shared = dict(evaluator.evaluate_many(schedules, prefix_bytes=2**30))
    assert sorted(shared) == list(range(len(schedules)))
    for index, evaluation in shared.items():
        assert evaluation.prompt_scores == alone[index].prompt_scores
        assert evaluation.quality_loss == alone[index].quality_loss and evaluation.cost == alone[index].cost
    first = prefix_plan(schedules)[0][0]
    assert shared[first].latency_s is not None, "the first run computed every step: its latency is its own"
    assert sum(e.latency_s is None for e in shared.values()) == len(schedules) - 1
    assert evaluator.handle._runtime.tape is None, "no tape (and its memory) outlives the batch"
    assert dict(evaluator.evaluate_many(schedules))[first].latency_s is not None, "no budget: nothing shared"


def test_the_uncached_schedule_is_scored_on_the_references_without_a_run(tiny_pixart_dir: Path) -> None:
    """Its images are the split's references, bit for bit, so it is judged, not generated again, alone or in a
    batch that shares prefixes."""
    spec = get_model(str(tiny_pixart_dir))
    prompts = tuple(f"a photo of object number {i}" for i in range(2))
    settings = EvaluationSettings(spec.name, "fidelity", prompts, 1, STEPS, spec.guidance_scale, spec.resolution)
    evaluator = Evaluator(spec, settings)
    assert torch.equal(evaluator.generate(evaluator.template)[0], evaluator.references)
    calls = counted_transformer_calls(evaluator)
    alone = evaluator.evaluate(evaluator.template)
    assert not calls and alone.figures["families"]["psnr_db"] == [100.0, 100.0], "the cap: identical images"
    assert alone.macs == evaluator.full_macs and alone.latency_s == evaluator.full_seconds_per_image
    schedules = [evaluator.template, *candidates(evaluator.template)[:3]]
    batch = dict(evaluator.evaluate_many(schedules, prefix_bytes=2**30))
    assert batch[0].prompt_scores == alone.prompt_scores
    replayed = sum(link.replay for _, link in prefix_plan(schedules[1:]))
    assert len(calls) == (3 * STEPS - replayed) * len(evaluator.chunks), "three runs, less their shared steps"
