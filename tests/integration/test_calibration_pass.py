"""The calibration pass on the digits model: each lane's and the transformer output's Gram matrices over the
steps, checked against outputs captured by hooks of the test's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ecad_search.construct.lanes import lane_gram
from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.models import get_model
from ecad_search.models.blocks import component_modules

STEPS = 4


def gram_of_calls(outputs: list[torch.Tensor], steps: int) -> tuple[np.ndarray, int]:
    """Σ over pipeline calls and rows of ⟨Y_a, Y_b⟩ for a module's outputs in call order, and the rows."""
    gram, rows = np.zeros((steps, steps)), 0
    for start in range(0, len(outputs), steps):
        stacked = torch.stack([o.reshape(o.shape[0], -1).double() for o in outputs[start : start + steps]])
        gram += torch.einsum("are,bre->ab", stacked, stacked).numpy()
        rows += stacked.shape[1]
    return gram, rows


def keeper(outputs: list[torch.Tensor]) -> Callable[..., None]:
    """A forward hook that keeps a module's output (a tuple's first part) in `outputs`."""

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        outputs.append((output[0] if isinstance(output, tuple) else output).detach())

    return keep


def test_the_pass_keeps_every_lanes_and_the_outputs_gram_matrix_over_the_steps() -> None:
    spec = get_model("digits")
    prompts = ("a handwritten digit 3", "a handwritten digit 8")
    settings = EvaluationSettings(spec.name, "fidelity", prompts, 2, STEPS, spec.guidance_scale, spec.resolution)
    evaluator = Evaluator(spec, settings)
    # Every element kept: the Gram matrices are exact, not estimates from a sample.
    recorded = lane_gram(evaluator, elements=10**9)

    captured: dict[str, list[torch.Tensor]] = {"output": [], "lane": []}
    with evaluator.bare_pipeline() as pipe:
        first_lane = next(iter(component_modules(pipe.transformer, evaluator.template.groups).values()))
        handles = [
            pipe.transformer.register_forward_hook(keeper(captured["output"])),
            first_lane.register_forward_hook(keeper(captured["lane"])),
        ]
        try:
            evaluator._run_chunks()
        finally:
            for handle in handles:
                handle.remove()
    output, rows = gram_of_calls(captured["output"], STEPS)
    lane, _ = gram_of_calls(captured["lane"], STEPS)
    assert recorded["rows"] == rows == 2 * len(prompts) * (2 if spec.guidance_scale > 1 else 1)
    assert np.allclose(recorded["output_gram"], output / rows, rtol=1e-5)
    assert np.allclose(recorded["gram"][0], lane / rows, rtol=1e-5)
    assert len(recorded["gram"]) == sum(g.num_blocks * len(g.components) for g in evaluator.template.groups)
    # Steps differ: the output at the last step is not the first step's.
    diagonal = np.diag(output)
    assert output[0, -1] < np.sqrt(diagonal[0] * diagonal[-1]) * (1 - 1e-3)
