"""Analytic cost of a schedule: multiply-accumulates per component, computed once per model and resolution.

The cost table comes from one forward pass of the transformer built on PyTorch's `meta` device (no weights,
no memory, well under a second even for FLUX): every linear layer and convolution is counted from its shapes
and attributed to the schedule component it runs inside, or to the per-step overhead outside them
(embeddings, adaLN modulation, final layer). Attention matmuls (QKᵀ and AV inside scaled-dot-product
attention) are counted separately, so `attention_matmuls=False` reproduces the figures of ECAD's profiler,
which saw only the linear layers. The cost of a schedule is then the mask · table dot product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .models import ModelSpec, get_family, get_model
from .models.blocks import component_modules, discover_block_groups
from .schedule import BlockGroup, CacheSchedule, ScheduleError, peak_stored_outputs


@dataclass(frozen=True)
class CostTable:
    """MACs of one transformer call for one batch row, split by schedule component."""

    groups: tuple[BlockGroup, ...]
    linear_macs: dict[str, np.ndarray]
    attention_macs: dict[str, np.ndarray]
    overhead_linear_macs: float
    overhead_attention_macs: float
    output_elements: dict[str, np.ndarray]

    def component_macs(self, attention_matmuls: bool = True) -> dict[str, np.ndarray]:
        """Per group, a (blocks, components) array of MACs per row and step."""
        if not attention_matmuls:
            return self.linear_macs
        return {name: self.linear_macs[name] + self.attention_macs[name] for name in self.linear_macs}

    def overhead_macs(self, attention_matmuls: bool = True) -> float:
        """MACs per row and step outside every component: they run at every step whatever the mask."""
        return self.overhead_linear_macs + (self.overhead_attention_macs if attention_matmuls else 0.0)

    def step_macs(self, schedule: CacheSchedule, attention_matmuls: bool = True) -> np.ndarray:
        """MACs per row of each step of the schedule."""
        if schedule.groups != self.groups:
            raise ScheduleError("schedule layout does not match the model's block groups")
        table = self.component_macs(attention_matmuls)
        per_step = sum(
            (mask * table[group.name]).reshape(mask.shape[0], -1).sum(axis=1)
            for _, group, mask in schedule.iter_groups()
        )
        return per_step + self.overhead_macs(attention_matmuls)


@dataclass(frozen=True)
class CacheMemory:
    """Peak number of component outputs the runtime holds at once, and their size in bytes."""

    peak_tensors: int
    peak_bytes: int


def resolve_spec(model: ModelSpec | str | None, schedule: CacheSchedule | None = None) -> ModelSpec:
    """The model a cost is asked for: given explicitly, or the one the schedule was made for."""
    if isinstance(model, ModelSpec):
        return model
    if model is None:
        if schedule is None or schedule.model is None:
            raise ScheduleError("the schedule names no model; pass model=... (a registry name or a folder)")
        model = schedule.model.name
    return get_model(model)


def cost_table(spec: ModelSpec, *, height: int, width: int) -> CostTable:
    """The cost table of a model at a pixel resolution (memoised per architecture and size)."""
    scale = spec.vae_scale_factor
    if height % scale or width % scale:
        raise ScheduleError(f"{height}x{width} px is not a multiple of the VAE factor {scale} of {spec.name}")
    key = json.dumps(spec.transformer_config, sort_keys=True, default=str)
    return _probe(spec.family, key, height // scale, width // scale, spec.text_tokens)


def estimate_macs(
    schedule: CacheSchedule,
    model: ModelSpec | str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    attention_matmuls: bool = True,
) -> float:
    """Total transformer MACs of a whole generation run with this schedule.

    `batch_size` is the number of rows in each transformer call, ECAD's convention: PixArt with guidance runs
    the unconditional and conditional rows together, so one image is batch 2 (the default follows the
    model and the schedule's guidance scale). Height and width default to the schedule's, then the model's.
    """
    _, table, rows = _setting(schedule, model, height, width, batch_size)
    return float(table.step_macs(schedule, attention_matmuls).sum() * rows)


def cache_memory(
    schedule: CacheSchedule,
    model: ModelSpec | str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> CacheMemory:
    """Peak cache the runtime holds for this schedule, given it keeps only outputs a later step reuses."""
    spec, table, rows = _setting(schedule, model, height, width, batch_size)
    element_size = torch.empty((), dtype=dtype or spec.torch_dtype).element_size()
    weights = {name: elements * rows * element_size for name, elements in table.output_elements.items()}
    return CacheMemory(int(peak_stored_outputs(schedule)), int(peak_stored_outputs(schedule, weights)))


def _setting(
    schedule: CacheSchedule,
    model: ModelSpec | str | None,
    height: int | None,
    width: int | None,
    batch_size: int | None,
) -> tuple[ModelSpec, CostTable, int]:
    """Model, cost table and transformer rows a cost question is about, filling defaults in one place."""
    spec = resolve_spec(model, schedule)
    height = height or schedule.height or spec.resolution
    width = width or schedule.width or spec.resolution
    rows = spec.transformer_rows(schedule.guidance_scale) if batch_size is None else batch_size
    return spec, cost_table(spec, height=int(height), width=int(width)), rows


class _MacCounter(TorchFunctionMode):
    """Counts linear, convolution and attention MACs of whatever runs under it, per active component."""

    def __init__(self, keys: list[Any]) -> None:
        super().__init__()
        self.active: Any = None
        self.linear = dict.fromkeys(keys, 0.0)
        self.attention = dict.fromkeys(keys, 0.0)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            weight = _arg(args, kwargs, 1, "weight")
            self.linear[self.active] += out.numel() * weight.shape[1]
        elif func is F.conv2d:
            weight = _arg(args, kwargs, 1, "weight")
            self.linear[self.active] += out.numel() * weight[0].numel()
        elif func is F.scaled_dot_product_attention:
            query, key = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
            value = _arg(args, kwargs, 2, "value")
            rows = query.numel() // query.shape[-1]
            self.attention[self.active] += rows * key.shape[-2] * (query.shape[-1] + value.shape[-1])
        return out


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


@cache
def _probe(family_name: str, config_key: str, latent_h: int, latent_w: int, text_tokens: int) -> CostTable:
    family = get_family(family_name)
    config = json.loads(config_key)
    with torch.device("meta"):
        transformer = family.transformer_class().from_config(config)
    groups = discover_block_groups(transformer)
    modules = component_modules(transformer, groups)
    counter = _MacCounter([None, *modules])
    elements = dict.fromkeys(modules, 0)
    handles = []
    for key, module in modules.items():
        handles.append(module.register_forward_pre_hook(_enter(counter, key)))
        handles.append(module.register_forward_hook(_leave(counter, elements, key)))
    inputs = family.transformer_inputs(
        config, height=latent_h, width=latent_w, batch_size=1, text_tokens=text_tokens, device="meta"
    )
    with torch.no_grad(), counter:
        transformer(**inputs)
    for handle in handles:
        handle.remove()
    return CostTable(
        groups=groups,
        linear_macs=_by_group(groups, counter.linear),
        attention_macs=_by_group(groups, counter.attention),
        overhead_linear_macs=float(counter.linear[None]),
        overhead_attention_macs=float(counter.attention[None]),
        output_elements=_by_group(groups, elements),
    )


def _enter(counter: _MacCounter, key: Any):  # type: ignore[no-untyped-def]
    def hook(module: torch.nn.Module, args: Any) -> None:
        counter.active = key

    return hook


def _leave(counter: _MacCounter, elements: dict, key: Any):  # type: ignore[no-untyped-def]
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        counter.active = None
        tensors = output if isinstance(output, tuple) else (output,)
        elements[key] = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))

    return hook


def _by_group(groups: tuple[BlockGroup, ...], values: dict) -> dict[str, np.ndarray]:
    return {
        group.name: np.array(
            [[float(values[(g, b, c)]) for c in range(len(group.components))] for b in range(group.num_blocks)]
        )
        for g, group in enumerate(groups)
    }
