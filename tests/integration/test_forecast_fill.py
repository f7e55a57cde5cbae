"""Forecast fill: a schedule's zeros filled by a Taylor forecast, in the runtime, the cost, the memory
look-ahead, the file format and the genome."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import POLICY_STEPS, digits_call

from ecad_search import CacheSchedule, ScheduleError, apply_schedule, load_schedule, save_schedule
from ecad_search.cost import cache_memory, cost_table, estimate_macs
from ecad_search.generation import load_pipeline
from ecad_search.heuristics import fora
from ecad_search.models import block_groups, get_model, schedule_metadata
from ecad_search.runtime import ScheduleHandle
from ecad_search.runtime.forecast import Forecast, TaylorForecaster
from ecad_search.schedule import FILL_GENES, forecast_macs, peak_stored_outputs

DIGITS = get_model("digits")


def random_schedule(seed: int, fill: str, steps: int = POLICY_STEPS) -> CacheSchedule:
    """A mask with about half its components skipped, irregularly, step 0 computing."""
    rng = np.random.default_rng(seed)
    groups = block_groups(DIGITS)
    masks = {g.name: rng.random((steps, g.num_blocks, len(g.components))) < 0.5 for g in groups}
    for mask in masks.values():
        mask[0] = True
    return CacheSchedule(groups, masks, fill=fill, **schedule_metadata(DIGITS))


@pytest.fixture(scope="module")
def digits_pipe():  # type: ignore[no-untyped-def]
    return load_pipeline(DIGITS)


def test_order_zero_is_reuse_bit_for_bit_and_forecasts_differ(digits_pipe) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(0, "reuse")
    with apply_schedule(digits_pipe, schedule):
        reused = digits_call(digits_pipe, {})
    with ScheduleHandle(digits_pipe, schedule, TaylorForecaster(0)):
        assert torch.equal(digits_call(digits_pipe, {}), reused)
    uncached = digits_call(digits_pipe, {})
    errors = {}
    for fill in ("taylor1", "taylor2"):
        with apply_schedule(digits_pipe, replace(schedule, fill=fill)) as handle:
            forecast = digits_call(digits_pipe, {})
            assert torch.equal(digits_call(digits_pipe, {}), forecast), "each run starts afresh"
        assert not torch.equal(forecast, reused)
        assert handle.stats.kept_tensors == 0, "every term is let go by the end of a run"
        errors[fill] = float((forecast - uncached).abs().mean())
    assert errors["taylor1"] > 0 and errors["taylor2"] > 0
    # On FORA-3's mask the first-order forecast is closer to the uncached image than reuse (TaylorSeer's point);
    # on an irregular mask it need not be, which is why construction chooses each lane's steps per fill.
    regular = fora(schedule.groups, POLICY_STEPS, 3).with_metadata(**schedule_metadata(DIGITS))
    distance = {}
    for fill in ("reuse", "taylor1"):
        with apply_schedule(digits_pipe, replace(regular, fill=fill)):
            distance[fill] = float((digits_call(digits_pipe, {}) - uncached).abs().mean())
    assert distance["taylor1"] < distance["reuse"]
    assert torch.equal(digits_call(digits_pipe, {}), uncached), "the schedule is gone after the block"


@pytest.mark.parametrize("fill", ["taylor1", "taylor2"])
def test_forecast_macs_and_memory_are_what_the_runtime_spends(digits_pipe, fill: str) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(1, fill)
    with apply_schedule(digits_pipe, schedule) as handle:
        digits_call(digits_pipe, {})
    rows = 10 * DIGITS.transformer_rows(DIGITS.guidance_scale)
    table = cost_table(DIGITS, height=DIGITS.resolution, width=DIGITS.resolution)
    # An independent count: walk each lane, one multiply-add per element for every difference taken at a
    # compute a later skip needs and every term added at a skip.
    order, expected = schedule.forecast_order, 0.0
    for _, group, mask in schedule.iter_groups():
        for b in range(group.num_blocks):
            for c in range(len(group.components)):
                lane, computes, terms_used = mask[:, b, c], 0, 0
                for step in range(schedule.num_steps):
                    if lane[step]:
                        computes += 1
                        terms_used += (min(computes, order + 1) - 1) * (not lane[step + 1 :].all())
                    else:
                        terms_used += min(computes, order + 1) - 1
                expected += terms_used * table.output_elements[group.name][b, c]
    assert expected > 0 and handle.stats.forecast_macs == pytest.approx(expected * rows)
    per_row = sum(
        float(forecast_macs(mask, order, table.output_elements[group.name]).sum())
        for _, group, mask in schedule.iter_groups()
    )
    assert per_row == pytest.approx(expected)
    reuse = replace(schedule, fill="reuse")
    assert estimate_macs(schedule, batch_size=rows) - estimate_macs(reuse, batch_size=rows) == pytest.approx(
        expected * rows
    )
    # The look-ahead holds what the runtime held: a lane's terms count once, its bytes once per term.
    assert handle.stats.peak_tensors == peak_stored_outputs(schedule)
    memory = cache_memory(schedule, batch_size=rows, dtype="float32")
    assert handle.stats.peak_bytes == memory.peak_bytes
    assert memory.peak_bytes > cache_memory(reuse, batch_size=rows, dtype="float32").peak_bytes


def test_forecast_macs_count_by_hand() -> None:
    # One lane, order 1, 6 steps: computes at 0, 2, 3; skips at 1, 4, 5. Step 0 holds one term, so the skip at
    # 1 adds nothing; step 2 takes a difference (a later skip needs it); step 3 another; steps 4, 5 add one
    # term each. 4 multiply-adds per element; with 10 elements, 40.
    mask = np.array([1, 0, 1, 1, 0, 0], dtype=bool)[:, None, None]
    assert forecast_macs(mask, 1, np.array([[10.0]])).tolist() == [0, 0, 10, 10, 10, 10]
    # Order 2 holds a third term from the third compute on: step 3's second difference, and one more term at 4, 5.
    assert forecast_macs(mask, 2, np.array([[10.0]])).tolist() == [0, 0, 10, 20, 20, 20]
    # A compute no later skip needs takes no difference.
    assert forecast_macs(np.array([1, 0, 1, 1], dtype=bool)[:, None, None], 1, np.array([[1.0]])).tolist() == [
        0, 0, 0, 0,
    ]  # fmt: skip


def test_order_one_is_exact_on_outputs_linear_in_the_step() -> None:
    a, b = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    forecaster, kept = TaylorForecaster(1), None
    for step in range(12):
        if step in (0, 1, 4, 5, 9):
            kept = forecaster.update(kept, a + b * step, step)
        else:
            assert isinstance(kept, Forecast)
            forecast = forecaster.forecast(kept, step)
            if step > 1:
                assert torch.allclose(forecast, a + b * step, rtol=0, atol=1e-12)


def test_version_one_files_load_as_reuse_and_version_two_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shipped = load_schedule("digits/fora-3")
    assert shipped.fill == "reuse" and shipped.same_mask(fora(shipped.groups, shipped.num_steps, 3))
    forecast = replace(shipped, fill="taylor2")
    again = load_schedule(save_schedule(forecast, tmp_path / "f.json"))
    assert again.fill == "taylor2" and again.same_mask(forecast)
    assert again.digest() == forecast.digest() != shipped.digest()
    assert (tmp_path / "f.json").read_text().count('"format_version": 2') == 1
    with pytest.raises(ScheduleError, match="unknown `fill` 'taylor3'"):
        replace(shipped, fill="taylor3")


def test_the_genome_carries_the_fill_only_when_it_forecasts() -> None:
    schedule = random_schedule(2, "reuse")
    assert schedule.genome().size == schedule.genome_length
    template = CacheSchedule.all_compute(schedule.groups, schedule.num_steps)
    for fill, genes in (("taylor1", [False, True]), ("taylor2", [True, True])):
        forecast = replace(schedule, fill=fill)
        genome = forecast.genome()
        assert genome.size == schedule.genome_length + FILL_GENES and genome[-FILL_GENES:].tolist() == genes
        assert template.with_genome(genome).digest() == forecast.digest()
    # In a search that evolves the fill, a reuse schedule carries two clear fill genes and keeps its digest.
    assert template.with_genome(schedule.genome(fill_genes=True)).digest() == schedule.digest()
    with pytest.raises(ScheduleError, match="genome has 3 genes"):
        template.with_genome(np.ones(3, dtype=bool))
