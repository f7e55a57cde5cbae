"""The runtime follows the schedule exactly, on stock diffusers pipelines built tiny."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_search import BlockGroup, CacheSchedule, apply_schedule
from ecad_search.heuristics import fora
from ecad_search.models.blocks import discover_block_groups
from ecad_search.runtime import StepCountError, StepMismatchError
from ecad_search.schedule import peak_stored_outputs
from ecad_search.testing import TINY_FLUX_CALL_KWARGS, TINY_PIXART_CALL_KWARGS

STEPS = 6


def random_schedule(transformer: torch.nn.Module, steps: int, seed: int, density: float = 0.5) -> CacheSchedule:
    groups = discover_block_groups(transformer)
    rng = np.random.default_rng(seed)
    masks = {}
    for group in groups:
        mask = rng.random((steps, group.num_blocks, len(group.components))) < density
        mask[0] = True
        masks[group.name] = mask
    return CacheSchedule(groups, masks)


class ReferenceCache:
    """The semantics, written plainly: every component always runs; at a reuse step its output is
    replaced by the output of the last step that computed it. Steps are counted by transformer calls."""

    def __init__(self, transformer: torch.nn.Module, schedule: CacheSchedule) -> None:
        self.step = -1
        self.last: dict[tuple[str, int, str], object] = {}
        self.handles = [transformer.register_forward_pre_hook(self._next_step)]
        for group in schedule.groups:
            mask = schedule.mask(group.name)
            for b, block in enumerate(getattr(transformer, group.name)):
                for c, name in enumerate(group.components):
                    hook = self._component((group.name, b, name), mask[:, b, c])
                    self.handles.append(getattr(block, name).register_forward_hook(hook))

    def _next_step(self, module: torch.nn.Module, args: tuple) -> None:
        self.step += 1

    def _component(self, key: tuple[str, int, str], computes: np.ndarray):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, args: tuple, output: object) -> object:
            if computes[self.step]:
                self.last[key] = output
                return output
            return self.last[key]

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def run_pixart(pipe, seed: int = 0, prompt: str | list[str] = "a red cat on a blue chair") -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        prompt, num_inference_steps=STEPS, generator=generator, output_type="pt", **TINY_PIXART_CALL_KWARGS
    ).images


def run_flux(pipe, seed: int = 0) -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        "a red cat", num_inference_steps=STEPS, generator=generator, output_type="pt", **TINY_FLUX_CALL_KWARGS
    ).images


def test_all_compute_schedule_is_bit_identical(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    plain = run_pixart(tiny_pixart_pipe)
    schedule = CacheSchedule.all_compute(discover_block_groups(tiny_pixart_pipe.transformer), STEPS)
    with apply_schedule(tiny_pixart_pipe, schedule):
        scheduled = run_pixart(tiny_pixart_pipe)
    assert torch.equal(plain, scheduled)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_mask_matches_reference_pixart(tiny_pixart_pipe, seed: int) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(tiny_pixart_pipe.transformer, STEPS, seed)
    reference = ReferenceCache(tiny_pixart_pipe.transformer, schedule)
    expected = run_pixart(tiny_pixart_pipe)
    reference.remove()
    plain = run_pixart(tiny_pixart_pipe)
    with apply_schedule(tiny_pixart_pipe, schedule) as handle:
        first = run_pixart(tiny_pixart_pipe)
        second = run_pixart(tiny_pixart_pipe)
    assert torch.equal(first, expected)
    assert torch.equal(second, expected), "a second call must start from step 0 again"
    assert (plain - expected).abs().max() > 1e-4, "the mask must change the output, or the test proves nothing"
    assert handle.stats.peak_tensors == peak_stored_outputs(schedule)
    assert handle.stats.kept_tensors == 0, "everything kept is released by the end of a run"


def test_random_mask_matches_reference_flux(tiny_flux_pipe) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(tiny_flux_pipe.transformer, STEPS, seed=3)
    assert [g.name for g in schedule.groups] == ["transformer_blocks", "single_transformer_blocks"]
    reference = ReferenceCache(tiny_flux_pipe.transformer, schedule)
    expected = run_flux(tiny_flux_pipe)
    reference.remove()
    with apply_schedule(tiny_flux_pipe, schedule):
        scheduled = run_flux(tiny_flux_pipe)
    assert torch.equal(scheduled, expected)
    assert (run_flux(tiny_flux_pipe) - expected).abs().max() > 1e-5


def test_batched_prompts_and_cfg_pair(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(tiny_pixart_pipe.transformer, STEPS, seed=5)
    prompts = ["a red cat", "a blue dog on a green chair"]
    reference = ReferenceCache(tiny_pixart_pipe.transformer, schedule)
    expected = run_pixart(tiny_pixart_pipe, prompt=prompts)
    reference.remove()
    with apply_schedule(tiny_pixart_pipe, schedule):
        assert torch.equal(run_pixart(tiny_pixart_pipe, prompt=prompts), expected)


def test_swapping_masks_keeps_the_hooks_and_follows_the_new_mask(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    first = random_schedule(tiny_pixart_pipe.transformer, STEPS, seed=11)
    second = random_schedule(tiny_pixart_pipe.transformer, STEPS, seed=12)
    reference = ReferenceCache(tiny_pixart_pipe.transformer, second)
    expected = run_pixart(tiny_pixart_pipe)
    reference.remove()
    with apply_schedule(tiny_pixart_pipe, first) as handle:
        run_pixart(tiny_pixart_pipe)
        handle.swap(second)
        assert torch.equal(run_pixart(tiny_pixart_pipe), expected)
        with pytest.raises(ValueError, match="block groups differ"):
            handle.swap(CacheSchedule.all_compute((BlockGroup("transformer_blocks", 1, ("attn1", "ff")),), STEPS))


def test_step_count_mismatch_is_refused_before_denoising(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    schedule = fora(discover_block_groups(tiny_pixart_pipe.transformer), STEPS + 2, 2)
    calls = []
    handle = tiny_pixart_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with (
        apply_schedule(tiny_pixart_pipe, schedule),
        pytest.raises(StepMismatchError, match="num_inference_steps=8"),
    ):
        run_pixart(tiny_pixart_pipe)
    handle.remove()
    assert calls == []


def test_leaving_the_context_restores_the_pipeline(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    transformer, scheduler = tiny_pixart_pipe.transformer, tiny_pixart_pipe.scheduler
    modules = dict(transformer.named_modules())
    before = {name: set(vars(m)) for name, m in modules.items()}
    scheduler_before = set(vars(scheduler))
    plain = run_pixart(tiny_pixart_pipe)
    with apply_schedule(tiny_pixart_pipe, random_schedule(transformer, STEPS, seed=2)):
        run_pixart(tiny_pixart_pipe)
    assert {name: set(vars(m)) for name, m in modules.items()} == before
    assert set(vars(scheduler)) == scheduler_before
    assert torch.equal(run_pixart(tiny_pixart_pipe), plain)


def test_explicit_enable_disable_and_double_apply(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    schedule = random_schedule(tiny_pixart_pipe.transformer, STEPS, seed=4)
    handle = apply_schedule(tiny_pixart_pipe, schedule)
    with pytest.raises(ValueError, match="already applied"):
        apply_schedule(tiny_pixart_pipe, schedule)
    cached = run_pixart(tiny_pixart_pipe)
    handle.disable()
    handle.enable()
    assert torch.equal(run_pixart(tiny_pixart_pipe), cached)
    handle.disable()


def test_bare_transformer_wraps_after_last_step(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    transformer = tiny_pixart_pipe.transformer
    schedule = random_schedule(transformer, 3, seed=7)
    torch.manual_seed(0)
    inputs = [
        {
            "hidden_states": torch.randn(2, 4, 8, 8),
            "encoder_hidden_states": torch.randn(2, 16, transformer.config.caption_channels),
            "timestep": torch.full((2,), 900 - 300 * i),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        }
        for i in range(3)
    ]
    with torch.no_grad(), apply_schedule(transformer, schedule) as handle:
        first = [transformer(**x, return_dict=False)[0] for x in inputs]
        second = [transformer(**x, return_dict=False)[0] for x in inputs]
        transformer(**inputs[0], return_dict=False)
        handle.reset()
        third = [transformer(**x, return_dict=False)[0] for x in inputs]
    for a, b, c in zip(first, second, third, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_strict_pipeline_run_refuses_extra_calls(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    transformer = tiny_pixart_pipe.transformer
    schedule = random_schedule(transformer, 2, seed=0)
    tiny_pixart_pipe.scheduler.set_timesteps(2)
    x = {
        "hidden_states": torch.randn(2, 4, 8, 8),
        "encoder_hidden_states": torch.randn(2, 16, transformer.config.caption_channels),
        "timestep": torch.full((2,), 10),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
    }
    with torch.no_grad(), apply_schedule(tiny_pixart_pipe, schedule):
        tiny_pixart_pipe.scheduler.set_timesteps(2)
        transformer(**x)
        transformer(**x)
        with pytest.raises(StepCountError, match="more than 2 times"):
            transformer(**x)
