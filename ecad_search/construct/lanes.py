"""The calibration pass: what every component lane (block × component) outputs at every step of uncached runs.

A lane's fill errors are squared distances between its outputs at different steps, and every fill this
package builds (reuse, a Taylor forecast) is a fixed linear combination of those outputs. So the pass keeps,
per lane, only the Gram matrix of its outputs over the steps, G[a, b] = Σ ⟨Y_a, Y_b⟩, summed over the
calibration images: `steps × steps` numbers per lane, whatever the resolution. It keeps the transformer's
own output the same way: one more Gram matrix, which sees how the lanes' errors combine when they skip
together. While a run is in flight it holds, per lane, a fixed seeded subset of `elements` output elements
per image and step, so the pass needs at most `(lanes + 1) × steps × images per call × elements × 4` bytes
(digits-28, 84 lanes, 20 steps, 20 images, 4,096 elements: 0.56 GB; digits' 18 lanes: 0.13 GB) on top of
the pipeline, and the distances it estimates are those of the subset, scaled to the whole output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..models.blocks import component_modules

if TYPE_CHECKING:
    from ..evaluation import Evaluator

# Output elements per image, step and lane that the pass keeps (all of them when a lane has fewer).
SAMPLED_ELEMENTS = 4096


def lane_gram(evaluator: Evaluator, elements: int = SAMPLED_ELEMENTS, seed: int = 0) -> dict[str, Any]:
    """Run the evaluator's split uncached and return, as JSON-ready lists, each lane's Gram matrix over the
    steps (`gram`: lanes × steps × steps, per transformer row, in units of the whole output), the
    transformer output's (`output_gram`: steps × steps) and the rows they average over (an image with
    guidance is two). Lanes are numbered in schedule order: group, block, component."""
    template = evaluator.template
    with evaluator.bare_pipeline() as pipe:
        modules = [*component_modules(pipe.transformer, template.groups).values(), pipe.transformer]
        recorder = _Recorder(len(modules), template.num_steps, elements, seed)
        with recorder.attached(pipe.transformer, modules):
            evaluator._run_chunks()
    gram = recorder.gram / max(recorder.rows, 1)
    return {"gram": gram[:-1].tolist(), "output_gram": gram[-1].tolist(), "rows": recorder.rows}


class _Recorder:
    """Torch hooks that count the transformer's calls and keep each lane's (and the transformer's) sampled
    outputs of the current pipeline call; at the call's last step they fold them into the Gram matrices and
    let them go."""

    def __init__(self, lanes: int, steps: int, elements: int, seed: int) -> None:
        self.steps, self.elements = steps, elements
        self.generator = torch.Generator().manual_seed(seed)
        self.gram = np.zeros((lanes, steps, steps))
        self.rows = 0
        self.step = 0
        self.current: list[list[torch.Tensor]] = [[] for _ in range(lanes)]
        self.picks: list[torch.Tensor | None] = [None] * lanes
        self.scale = np.ones(lanes)

    @contextmanager
    def attached(self, transformer: torch.nn.Module, modules: list[torch.nn.Module]) -> Iterator[None]:
        # Hooks run in the order registered: every output is kept before the step's fold.
        handles = [module.register_forward_hook(self._keeper(lane)) for lane, module in enumerate(modules)]
        handles.append(transformer.register_forward_hook(self._after_step))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _keeper(self, lane: int) -> Any:
        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            flat = _rows(output)
            if self.picks[lane] is None:
                count = flat.shape[1]
                picked = torch.randperm(count, generator=self.generator)[: self.elements].sort().values
                self.picks[lane] = picked
                self.scale[lane] = count / len(picked)
            self.current[lane].append(flat[:, self.picks[lane]].float().cpu())

        return keep

    def _after_step(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.step += 1
        if self.step < self.steps:
            return
        for lane, outputs in enumerate(self.current):
            stacked = torch.stack(outputs).double()  # steps × rows × elements
            self.gram[lane] += torch.einsum("are,bre->ab", stacked, stacked).numpy() * self.scale[lane]
            outputs.clear()
        self.rows += int(stacked.shape[1])
        self.step = 0


def _rows(output: Any) -> torch.Tensor:
    """A component's output as one row of elements per batch row (FLUX's two streams side by side)."""
    parts = output if isinstance(output, tuple) else (output,)
    return torch.cat([part.reshape(part.shape[0], -1) for part in parts], dim=1).detach()
