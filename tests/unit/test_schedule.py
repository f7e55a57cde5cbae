"""The schedule object: validation, genome round trip, reuse plan and peak memory."""

from __future__ import annotations

import numpy as np
import pytest

from ecad_search.heuristics import all_heuristics, attention_every, evenly_spaced, fora, no_cache, tgate
from ecad_search.schedule import BlockGroup, CacheSchedule, ScheduleError, peak_stored_outputs, reuse_plan

PIXART = (BlockGroup("transformer_blocks", 28, ("attn1", "attn2", "ff")),)
FLUX = (
    BlockGroup("transformer_blocks", 19, ("attn", "ff", "ff_context")),
    BlockGroup("single_transformer_blocks", 38, ("attn", "proj_mlp", "proj_out")),
)


def test_step_zero_must_compute() -> None:
    mask = np.ones((4, 28, 3), dtype=bool)
    mask[0, 5, 1] = False
    with pytest.raises(ScheduleError, match="step 0 must compute"):
        CacheSchedule(PIXART, {"transformer_blocks": mask})


def test_wrong_shape_and_unknown_group() -> None:
    with pytest.raises(ScheduleError, match=r"expected \(steps, 28, 3\)"):
        CacheSchedule(PIXART, {"transformer_blocks": np.ones((4, 27, 3), dtype=bool)})
    with pytest.raises(ScheduleError, match="unknown block group"):
        CacheSchedule(PIXART, {"transformer_blocks": np.ones((4, 28, 3)), "blocks": np.ones((4, 1, 1))})


def test_genome_round_trip_and_length() -> None:
    rng = np.random.default_rng(0)
    template = CacheSchedule.all_compute(FLUX, 20)
    assert template.genome_length == 19 * 171 == 3249
    genome = rng.random(template.genome_length) < 0.3
    schedule = template.with_genome(genome)
    assert np.array_equal(schedule.genome(), genome)
    assert schedule.mask("single_transformer_blocks")[0].all()
    first_step = genome[:171]
    assert np.array_equal(schedule.mask("transformer_blocks")[1].ravel(), first_step[:57])
    assert schedule.digest() != template.digest()
    assert schedule.with_genome(genome).digest() == schedule.digest()


def test_reuse_plan_keeps_only_what_a_later_step_reuses() -> None:
    computes = np.array([1, 0, 0, 1, 1, 0, 1], dtype=bool)
    store, release = reuse_plan(computes)
    assert store.tolist() == [1, 0, 0, 0, 1, 0, 0]
    assert release.tolist() == [0, 0, 1, 0, 0, 1, 0]


def test_peak_counts_outputs_held_at_once() -> None:
    groups = (BlockGroup("b", 2, ("x",)),)
    mask = np.ones((4, 2, 1), dtype=bool)
    mask[1, 0, 0] = False
    mask[3, 1, 0] = False
    assert peak_stored_outputs(CacheSchedule(groups, {"b": mask})) == 1
    mask[2, 1, 0] = False
    assert peak_stored_outputs(CacheSchedule(groups, {"b": mask})) == 1, "block 0 is released before block 1 stores"
    mask[2, 0, 0] = False
    assert peak_stored_outputs(CacheSchedule(groups, {"b": mask})) == 2
    weights = {"b": np.array([[10.0], [3.0]])}
    assert peak_stored_outputs(CacheSchedule(groups, {"b": mask}), weights) == 13.0


def test_heuristic_families() -> None:
    f2 = fora(PIXART, 20, 2)
    assert f2.compute_fraction == 0.5
    assert f2.step_compute_fraction().tolist() == [1.0, 0.0] * 10
    gate = tgate(PIXART, 20, gate_step=10, self_attention_every=2)
    mask = gate.mask("transformer_blocks")
    assert mask[:10, :, 1].all() and not mask[10:, :, 1].any()
    assert mask[:, :, 2].all()
    assert mask[10:, 0, 0].tolist() == [1, 0] * 5
    even = evenly_spaced(PIXART, 20, "ff", 4)
    assert even.mask("transformer_blocks")[:, 0, 2].sum() == 5 and even.mask("transformer_blocks")[:, :, :2].all()
    attn = attention_every(PIXART, 20, 3)
    assert attn.mask("transformer_blocks")[:, :, 2].all() and attn.mask("transformer_blocks")[:, 0, 0].sum() == 7
    assert no_cache(PIXART, 20).compute_fraction == 1.0
    with pytest.raises(ScheduleError, match="attn2"):
        tgate(FLUX, 20, 10)


def test_all_heuristics_span_compute_fractions() -> None:
    fractions = [s.compute_fraction for s in all_heuristics(PIXART, 20)]
    assert min(fractions) == pytest.approx(0.05) and max(fractions) == 1.0
    assert len({s.digest() for s in all_heuristics(PIXART, 20)}) == len(fractions)
    assert len(all_heuristics(FLUX, 20)) > 20
