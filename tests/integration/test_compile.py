"""Schedules and policies on a compiled transformer: `compile_components` compiles each cacheable component
once per class, the per-step decisions stay outside the compiled code, and nothing recompiles after warm-up,
whatever the schedule, the step or the policy; the images match eager ones to float tolerance."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from ecad_search import apply_policy, apply_schedule, compile_components, policy_config
from ecad_search.heuristics import fora
from ecad_search.models.blocks import component_modules, discover_block_groups
from ecad_search.schedule import CacheSchedule, ScheduleError
from ecad_search.testing import TINY_PIXART_CALL_KWARGS, tiny_pixart_pipeline

STEPS = 8


def generate(pipe) -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    return pipe(["a red cat", "a blue house"], num_inference_steps=STEPS, generator=generator, output_type="pt",
                **TINY_PIXART_CALL_KWARGS).images  # fmt: skip


def learned_looking(template: CacheSchedule) -> CacheSchedule:
    """A seeded random mask: different components skip at different steps, as a searched schedule's do."""
    return template.with_genome(np.random.default_rng(0).random(template.genome_length) < 0.6)


def test_compiled_components_run_schedules_and_a_policy_without_recompiling() -> None:
    pipe = tiny_pixart_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    groups = discover_block_groups(pipe.transformer)
    runs = {
        "fora-3": lambda: apply_schedule(pipe, fora(groups, STEPS, 3)),
        "learned": lambda: apply_schedule(pipe, learned_looking(CacheSchedule.all_compute(groups, STEPS))),
        "first-block-cache": lambda: apply_policy(pipe, policy_config("first-block-cache", threshold=0.2)),
    }
    eager = {"uncached": generate(pipe)}
    for name, apply in runs.items():
        with apply():
            eager[name] = generate(pipe)
    assert not torch.equal(eager["fora-3"], eager["learned"]), "the schedules differ"

    torch._dynamo.reset()
    counters.clear()
    assert compile_components(pipe) == 2 * 3, "2 blocks × (attn1, attn2, ff)"
    with apply_schedule(pipe, fora(groups, STEPS, 2)):
        generate(pipe)  # warm-up: the first call compiles
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 3, "one graph per component class, shared by every block"

    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            for name, apply in runs.items():
                with apply():
                    compiled = generate(pipe)
                torch.testing.assert_close(compiled, eager[name], rtol=0, atol=1e-4, msg=name)
        torch.testing.assert_close(generate(pipe), eager["uncached"], rtol=0, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == graphs, "no recompilation after warm-up"
    assert not counters["graph_break"], "no graph break inside a component"

    modules = component_modules(pipe.transformer, groups).values()
    assert not any(inspect.ismethod(module.forward) for module in modules), "removing hooks kept the compiled ones"
    with apply_schedule(pipe, fora(groups, STEPS, 3)), pytest.raises(ScheduleError, match="compile its components"):
        compile_components(pipe)


@pytest.mark.parametrize("compile_whole", [torch.compile, lambda t: t.compile() or t])
def test_a_transformer_compiled_whole_is_refused_with_the_fix(compile_whole) -> None:  # type: ignore[no-untyped-def]
    pipe = tiny_pixart_pipeline(seed=0)
    schedule = fora(discover_block_groups(pipe.transformer), STEPS, 3)
    pipe.transformer = compile_whole(pipe.transformer)
    with pytest.raises(ScheduleError, match=r"compiled whole.*compile_components\(pipe\)"):
        apply_schedule(pipe, schedule)
    with pytest.raises(ScheduleError, match="compiled whole"):
        apply_policy(pipe, policy_config("first-block-cache"))
