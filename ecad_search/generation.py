"""Load a registered model's pipeline and generate with it, with or without a schedule, timed.

One place decides how a pipeline of each family is called (which keyword arguments it takes), so the
command line, the benchmarks and the search all generate the same way.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from .models import ModelSpec, get_family
from .runtime import apply_schedule
from .schedule import CacheSchedule


@dataclass(frozen=True)
class GenerationSettings:
    """What a generation run is: the same for every schedule compared on one model."""

    steps: int
    guidance_scale: float
    height: int
    width: int
    seed: int = 0

    @classmethod
    def for_model(
        cls,
        spec: ModelSpec,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        resolution: int | None = None,
        seed: int = 0,
    ) -> GenerationSettings:
        size = spec.resolution if resolution is None else resolution
        return cls(
            steps=spec.default_steps if steps is None else steps,
            guidance_scale=spec.guidance_scale if guidance_scale is None else guidance_scale,
            height=size,
            width=size,
            seed=seed,
        )


def resolve_device(name: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else the CPU; a device that is not there is a one-line error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' is not available (torch sees no CUDA GPU): use `device` cpu or auto")
    return name


def device_label(device: str) -> str:
    """What times a run on `device`: the GPU's name, or the CPU's and its core count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"


def load_pipeline(spec: ModelSpec, *, device: str = "cpu", dtype: torch.dtype | None = None) -> Any:
    """The model's pipeline on `device`; half precision only where it pays (CUDA), float32 on CPU by default."""
    if dtype is None:
        dtype = spec.torch_dtype if str(device).startswith("cuda") else torch.float32
    pipe = get_family(spec).load_pipeline(spec, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_kwargs(pipe: Any, spec: ModelSpec, settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments for one call: the family's own, then the settings the pipeline accepts."""
    accepted = inspect.signature(pipe.__call__).parameters
    wanted = {
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "height": settings.height,
        "width": settings.width,
    }
    kwargs = {k: v for k, v in get_family(spec).call_kwargs(spec).items() if k in accepted}
    kwargs.update({k: v for k, v in wanted.items() if k in accepted})
    return kwargs


def generate(
    pipe: Any,
    spec: ModelSpec,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    schedule: CacheSchedule | None = None,
    output_type: str = "pil",
    **extra: Any,
) -> tuple[Any, float]:
    """Images for the prompts (one seeded generator per call) and the wall time of the pipeline call."""
    kwargs = {**pipeline_kwargs(pipe, spec, settings), **extra}
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    start = time.perf_counter()
    if schedule is None:
        images = pipe(prompts, generator=generator, output_type=output_type, **kwargs).images
    else:
        with apply_schedule(pipe, schedule):
            images = pipe(prompts, generator=generator, output_type=output_type, **kwargs).images
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return images, time.perf_counter() - start
