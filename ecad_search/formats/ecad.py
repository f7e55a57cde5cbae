"""Read schedule files written by ECAD's code (the `cache_schedule` JSON of github.com/AniAggarwal/ecad).

ECAD stores `true` for "recompute" (our 1), keys steps as "000".., blocks as "0".. and FLUX single-stream
blocks as "single_0"... Its step-0 genes are dead at runtime (an empty cache falls back to recompute), so a
file that caches at step 0 is normalised to compute there, with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..models.flux import FLUX_DEV
from ..models.pixart import PIXART_ALPHA, PIXART_SIGMA
from ..schedule import BlockGroup, CacheSchedule, ModelRef, ScheduleError

PIXART_COMPONENTS = {"attn1": "attn1", "attn2": "attn2", "ff": "ff"}
FLUX_DOUBLE_COMPONENTS = {"full_attn": "attn", "full_ff": "ff", "full_ff_context": "ff_context"}
FLUX_SINGLE_COMPONENTS = {"single_attn": "attn", "single_proj_mlp": "proj_mlp", "single_proj_out": "proj_out"}
IGNORED_KEYS = {"custom_compute_attn", "custom_compute_ff"}
ECAD_MACS_DEFINITION = (
    "total MACs of the transformer over the run as recorded by ECAD's profiler: linear layers only "
    "(attention matmuls not counted), batch 2"
)


class Step0Warning(UserWarning):
    """An imported schedule asked to reuse outputs at step 0; it was set to compute there."""


def is_ecad(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and isinstance(data.get("cache_schedule"), dict)


def from_ecad(data: dict[str, Any], source: str = "schedule") -> CacheSchedule:
    body = data["cache_schedule"]
    try:
        steps = int(body["num_inference_steps"])
        num_blocks = int(body["num_blocks"])
        per_step = body["schedule"]
    except (KeyError, TypeError, ValueError) as err:
        raise ScheduleError(f"{source}: ECAD cache_schedule lacks {err}") from None
    single = body.get("num_single_blocks")
    if single:
        layout = [
            ("transformer_blocks", [str(b) for b in range(num_blocks)], FLUX_DOUBLE_COMPONENTS),
            (
                "single_transformer_blocks",
                [f"single_{b}" for b in range(int(single))],
                FLUX_SINGLE_COMPONENTS,
            ),
        ]
    else:
        layout = [("transformer_blocks", [str(b) for b in range(num_blocks)], PIXART_COMPONENTS)]
    masks, groups = {}, []
    for group_name, block_keys, components in layout:
        groups.append(BlockGroup(group_name, len(block_keys), tuple(components.values())))
        masks[group_name] = _read_group(per_step, steps, block_keys, components, source)
    _normalise_step0(masks, source)
    config = data.get("config") or {}
    spec = _model_for(config, bool(single))
    metrics = {}
    total = (data.get("metrics") or {}).get("total_macs")
    if total is not None:
        metrics["ecad_macs"] = {"value": float(total), "unit": "MAC", "definition": ECAD_MACS_DEFINITION}
    return CacheSchedule(
        groups=tuple(groups),
        masks=masks,
        model=ModelRef(spec.name, spec.family, spec.transformer_id or spec.pipeline_id),
        name=str(body.get("name", "")),
        height=config.get("height", spec.resolution),
        width=config.get("width", spec.resolution),
        guidance_scale=config.get("guidance_scale", spec.guidance_scale),
        metrics=metrics,
        provenance={"method": "imported", "source_format": "ecad", "source_name": str(body.get("name", ""))},
    )


def _read_group(
    per_step: dict[str, Any], steps: int, block_keys: list[str], components: dict[str, str], source: str
) -> np.ndarray:
    mask = np.ones((steps, len(block_keys), len(components)), dtype=bool)
    step_keys = sorted(per_step, key=_step_index)
    if len(step_keys) != steps:
        raise ScheduleError(f"{source}: ECAD schedule lists {len(step_keys)} steps, num_inference_steps is {steps}")
    for s, step_key in enumerate(step_keys):
        blocks = per_step[step_key]
        for b, block_key in enumerate(block_keys):
            if block_key not in blocks:
                raise ScheduleError(f"{source}: ECAD step {step_key} has no block '{block_key}'")
            entry = blocks[block_key]
            unknown = set(entry) - set(components) - IGNORED_KEYS
            if unknown:
                raise ScheduleError(
                    f"{source}: unknown component(s) {sorted(unknown)} in ECAD block '{block_key}'; "
                    f"expected {', '.join(components)}"
                )
            for c, ecad_name in enumerate(components):
                mask[s, b, c] = bool(entry.get(ecad_name, True))
    return mask


def _step_index(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise ScheduleError(f"ECAD step key '{key}' is not a step number") from None


def _normalise_step0(masks: dict[str, np.ndarray], source: str) -> None:
    cached = sum(int((~mask[0]).sum()) for mask in masks.values())
    if cached:
        warnings.warn(
            f"{source}: {cached} component(s) reuse at step 0, where nothing is cached yet; "
            "set to compute (ECAD recomputed them anyway)",
            Step0Warning,
            stacklevel=3,
        )
        for mask in masks.values():
            mask[0] = True


def _model_for(config: dict[str, Any], flux: bool):  # type: ignore[no-untyped-def]
    if flux:
        return FLUX_DEV
    named = " ".join(str(config.get(k, "")) for k in ("transformer_weights", "pipeline_weights", "pipeline"))
    return PIXART_SIGMA if "sigma" in named.lower() else PIXART_ALPHA
