"""Analytic cost of a schedule: multiply-accumulates per component, computed once per model and resolution.

The cost table comes from one forward pass of the transformer built on PyTorch's `meta` device (`probe.py`:
no weights, no memory). Attention matmuls (QKᵀ and AV) are counted apart from linear layers, so
`attention_matmuls=False` reproduces the figures of ECAD's profiler, which saw only the linear layers. The
cost of a schedule is then the mask · table dot product, plus a forecast fill's own arithmetic
(`schedule.forecast_macs`).

The probe itself is cheap; importing a diffusers transformer class to build it is not. So each table is kept
as JSON in the user cache folder (`files.user_cache_dir()`), keyed by the architecture, the size, the
diffusers version and `COST_MODEL_VERSION`: after the first time, `describe` and `heuristic` import neither
torch nor diffusers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import installed_version
from ..files import user_cache_dir, write_atomic
from ..models import ModelSpec, get_model
from ..models.base import DTYPE_BYTES
from ..schedule import BlockGroup, CacheSchedule, ScheduleError, forecast_macs, peak_stored_outputs

if TYPE_CHECKING:
    import torch

# Bump when the probe counts differently, so cached tables from older versions are not read.
COST_MODEL_VERSION = 1


@dataclass(frozen=True)
class CostTable:
    """MACs of one transformer call for one batch row, split by schedule component."""

    groups: tuple[BlockGroup, ...]
    linear_macs: dict[str, np.ndarray]
    attention_macs: dict[str, np.ndarray]
    overhead_linear_macs: float
    overhead_attention_macs: float
    output_elements: dict[str, np.ndarray]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostTable:
        def arrays(values: dict[str, Any]) -> dict[str, np.ndarray]:
            return {name: np.array(rows, dtype=float) for name, rows in values.items()}

        return cls(
            groups=tuple(BlockGroup.from_dict(g) for g in data["groups"]),
            linear_macs=arrays(data["linear_macs"]),
            attention_macs=arrays(data["attention_macs"]),
            overhead_linear_macs=float(data["overhead_linear_macs"]),
            overhead_attention_macs=float(data["overhead_attention_macs"]),
            output_elements=arrays(data["output_elements"]),
        )

    def component_macs(self, attention_matmuls: bool = True) -> dict[str, np.ndarray]:
        """Per group, a (blocks, components) array of MACs per row and step."""
        if not attention_matmuls:
            return self.linear_macs
        return {name: self.linear_macs[name] + self.attention_macs[name] for name in self.linear_macs}

    def overhead_macs(self, attention_matmuls: bool = True) -> float:
        """MACs per row and step outside every component: they run at every step whatever the mask."""
        return self.overhead_linear_macs + (self.overhead_attention_macs if attention_matmuls else 0.0)

    def step_macs(self, schedule: CacheSchedule, attention_matmuls: bool = True) -> np.ndarray:
        """MACs per row of each step of the schedule, a forecast fill's arithmetic included."""
        if schedule.groups != self.groups:
            raise ScheduleError("schedule layout does not match the model's block groups")
        table = self.component_macs(attention_matmuls)
        per_step = sum(
            (mask * table[group.name]).reshape(mask.shape[0], -1).sum(axis=1)
            for _, group, mask in schedule.iter_groups()
        )
        if schedule.forecast_order:
            order, elements = schedule.forecast_order, self.output_elements
            per_step = per_step + sum(
                forecast_macs(mask, order, elements[group.name]) for _, group, mask in schedule.iter_groups()
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
    return _table(spec.family, key, height // scale, width // scale, spec.text_tokens)


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
    dtype: torch.dtype | str | None = None,
) -> CacheMemory:
    """Peak cache the runtime holds for this schedule, given it keeps only outputs a later step reuses."""
    spec, table, rows = _setting(schedule, model, height, width, batch_size)
    element_size = _element_bytes(dtype or spec.dtype)
    weights = {name: elements * rows * element_size for name, elements in table.output_elements.items()}
    return CacheMemory(int(peak_stored_outputs(schedule)), int(peak_stored_outputs(schedule, weights)))


def _element_bytes(dtype: torch.dtype | str) -> int:
    """Bytes per element of a torch dtype, or of a dtype name such as 'float16' (no torch import)."""
    return DTYPE_BYTES[dtype] if isinstance(dtype, str) else dtype.itemsize


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


@cache
def _table(family: str, config_key: str, latent_h: int, latent_w: int, text_tokens: int) -> CostTable:
    """The table from the disk cache, or probed and stored there; an unwritable cache folder only costs time."""
    key = {
        "family": family,
        "config": json.loads(config_key),
        "latent": [latent_h, latent_w],
        "text_tokens": text_tokens,
        "diffusers": installed_version("diffusers"),
        "cost_model": COST_MODEL_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = user_cache_dir() / "cost" / f"{family}-{latent_h}x{latent_w}-{digest}.json"
    try:
        return CostTable.from_dict(json.loads(path.read_text())["table"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from .probe import count_macs

    data = count_macs(family, key["config"], latent_h, latent_w, text_tokens)
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps({"key": key, "table": data}, sort_keys=True))
    return CostTable.from_dict(data)
