"""Online cache policies on the same hook machinery as schedules: a policy decides while the pipeline runs,
step by step, whether the transformer's block stack runs or its output is rebuilt from the cache.

Step-level residual caching (TeaCache, SeaCache, First-Block Cache and the others of that family): on a
computed step the stack's residual `R = h_out − h_ref` is kept, where `h_ref` is the stack's input, or the
output of the leading blocks a policy always runs (First-Block Cache); on a reused step the remaining blocks
pass their input through and the last returns the gate's reused output (`h_ref + R`, or a forecast).
Everything outside the stack (embeddings, the final norm and projection) always runs with the current
timestep. The stack is every block group in execution order (FLUX: the double-stream blocks, then the single
ones); only the image stream is cached, as the text stream ends with the stack. A step is decided once for
the whole batch, so PixArt's batched guidance pair takes one decision per step; a true-CFG pipeline's
cond/uncond cache contexts each keep their own state.

A policy is one module of this package: a config dataclass (its knobs, with the reference's defaults) whose
`gate()` makes the per-run decision state, a `CONFIG` line and its `SWEEP`; adding one touches no other
file. Policies that work per component rather than per step (FORA, TaylorSeer) are `ComponentPolicyConfig`s:
a static mask and a reuse rule. `apply_policy` (`runtime.py`) works like `apply_schedule`.
"""

from __future__ import annotations

import importlib
import math
import numbers
import pkgutil
import sys
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..schedule import BlockGroup, CacheSchedule, ScheduleError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..runtime.forecast import Forecaster

# The modules of this package that are not policies; every other module is one, named after it with dashes.
NOT_POLICIES = frozenset({"base", "runtime", "calibration"})


class PolicyError(ScheduleError):
    """A policy that cannot run on this pipeline, or an unknown policy or knob."""


@dataclass
class Observation:
    """What a gate sees when it decides a step: the transformer call's own inputs, the diffusion state at this
    step, the stack's input and, for policies that always run leading blocks, their output (the probe)."""

    step: int
    num_steps: int
    latent: torch.Tensor
    timestep: torch.Tensor
    signal: float
    noise: float
    grid: tuple[int, int]
    stack_input: torch.Tensor
    first_block: nn.Module
    block_kwargs: dict[str, Any]
    probe: torch.Tensor | None = None


class Gate(ABC):
    """One run's decision state: told each step's observation, says whether the stack computes; on a reused
    step, what the stack's output is (the cached residual on its reference, unless the policy forecasts).
    `overhead_macs` counts the gate's own arithmetic (filters, norms, fits), analytically from the shapes it
    saw, beside the model's MACs."""

    overhead_macs: float = 0.0

    @abstractmethod
    def decide(self, seen: Observation) -> bool:
        """True: run the stack (and refresh the cache); False: reuse."""

    def observe(self, seen: Observation, output: torch.Tensor) -> None:
        """The stack's output on a computed step (a forecasting policy keeps it; the others need nothing)."""
        return None

    def reused_output(self, seen: Observation, reference: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return reference + residual


@dataclass(frozen=True)
class PolicyConfig:
    """A policy's knobs. Subclasses set `name`, and say how many leading blocks always run before the decision
    (First-Block Cache: 1, DiCache: its probe depth) and whether the cached residual is taken from the stack's
    input or from those leading blocks' output."""

    name: ClassVar[str] = ""
    residual_from_input: ClassVar[bool] = True
    # What a step (or component) that does not compute gets: "reused" (the cached residual or output),
    # "extrapolated" (DiCache) or "forecast" (Spectrum, TaylorSeer).
    skipped: ClassVar[str] = "reused"
    # Each numeric knob's closed range; one not listed is any finite number from 0 up.
    limits: ClassVar[dict[str, tuple[float, float]]] = {}

    def __post_init__(self) -> None:
        for spec in fields(self):
            bounds = self.limits.get(spec.name, (0.0, math.inf))
            check_knob(self.name, spec.name, getattr(self, spec.name), spec.default, bounds)

    @property
    def leading_blocks(self) -> int:
        return 0

    def knobs(self) -> dict[str, Any]:
        return asdict(self)

    @abstractmethod
    def gate(self) -> Gate: ...


@dataclass(frozen=True)
class ComponentPolicyConfig(PolicyConfig):
    """A policy that is a static per-step schedule of every component, with an optional forecasting reuse
    rule: it decides nothing per step, so it has no gate."""

    @abstractmethod
    def computed_steps(self, num_steps: int) -> list[int]:
        """The steps on which every component computes."""

    def forecaster(self) -> Forecaster | None:
        """The reuse rule: None reuses each component's last output unchanged."""
        return None

    def gate(self) -> Gate:
        raise PolicyError(f"{self.name} is a per-component schedule, not a step gate: apply it with apply_policy")

    def schedule(self, groups: tuple[BlockGroup, ...], num_steps: int) -> CacheSchedule:
        """This policy's mask for a run of `num_steps`: a computed step runs every component, the others none."""
        computed = np.zeros(num_steps, dtype=bool)
        computed[self.computed_steps(num_steps)] = True
        masks = {
            group.name: np.broadcast_to(computed[:, None, None], (num_steps, group.num_blocks, len(group.components)))
            for group in groups
        }
        return CacheSchedule(groups=groups, masks=masks, name=self.name, provenance=policy_provenance(self))


def check_knob(policy: str, knob: str, value: Any, default: Any, bounds: tuple[float, float]) -> None:
    """Raise a `PolicyError` naming the knob unless `value` has its default's type (a number, a whole number, a
    flag, or a tuple of numbers) and a number lies within `bounds`: a NaN, a negative threshold or a string
    would otherwise fail mid-run, or run as something else."""
    if isinstance(default, bool):
        kind, fits = "true or false", isinstance(value, bool | np.bool_)
    elif isinstance(default, int):
        kind, fits = "a whole number", isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    elif isinstance(default, float):
        kind, fits = "a finite number", _finite(value)
    elif isinstance(default, tuple):
        kind, fits = "a list of finite numbers", isinstance(value, tuple) and all(map(_finite, _leaves(value)))
    else:
        return
    low, high = bounds
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if numeric:
        kind += f" of at least {low:g}" if math.isinf(high) else f" from {low:g} to {high:g}"
    if not fits or (numeric and not low <= value <= high):
        raise PolicyError(f"{policy}'s {knob} must be {kind}, got {value!r} (its default is {default!r})")


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and math.isfinite(value)


def _leaves(value: Any) -> list[Any]:
    """The items of a tuple knob, nested tuples (a table's rows) flattened."""
    return [leaf for item in value for leaf in (_leaves(item) if isinstance(item, tuple) else [item])]


@dataclass(frozen=True)
class KnobRange:
    """The range `ecad-search compare` sweeps one knob over, from caching nothing to caching much; a policy
    module names its swept knobs in `SWEEP`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def grid(self, points: int) -> list[float]:
        """`points` values from low to high (evenly, or evenly in log), distinct integers for an integer knob."""
        spaced = np.geomspace if self.log else np.linspace
        values = [float(v) for v in spaced(self.low, self.high, points)]
        if self.integer:
            return sorted({round(v) for v in values})
        return [float(f"{v:.4g}") for v in values]


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean |current − previous| / mean |previous|: the distance every step-level policy thresholds."""
    return float((current - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12))


def policy_provenance(config: PolicyConfig) -> dict[str, Any]:
    """Where a realised mask came from: the policy, its knobs, and what its skipped steps got instead."""
    return {"method": "policy", "policy": config.name, "knobs": config.knobs(), "skipped": config.skipped}


@cache
def policy_names() -> tuple[str, ...]:
    """Every policy: each module of this package but the machinery, by name (`first-block-cache`)."""
    modules = (info.name for info in pkgutil.iter_modules(sys.modules[__package__].__path__))
    return tuple(sorted(name.replace("_", "-") for name in modules if name not in NOT_POLICIES))


def policy_module(name: str) -> Any:
    """The module of a policy, imported on first use (each imports torch and its own maths)."""
    if name not in policy_names():
        raise PolicyError(f"unknown policy '{name}': use one of {', '.join(policy_names())}")
    return importlib.import_module(f".{name.replace('-', '_')}", __package__)


def policy_config(name: str, **knobs: Any) -> PolicyConfig:
    """The named policy's config with these knobs (the rest at their defaults)."""
    config = policy_module(name).CONFIG
    known = [f.name for f in fields(config)]
    unknown = [knob for knob in knobs if knob not in known]
    if unknown:
        raise PolicyError(f"policy '{name}' has no knob '{unknown[0]}': use {', '.join(known)}")
    return config(**{knob: _frozen(value) for knob, value in knobs.items()})


def _frozen(value: Any) -> Any:
    """JSON lists as tuples, nested too, so a config read from a file is frozen and hashable."""
    return tuple(_frozen(item) for item in value) if isinstance(value, list | tuple) else value


def policy_sweep(name: str) -> dict[str, KnobRange]:
    """The knobs `ecad-search compare` sweeps for this policy, with their ranges."""
    return dict(policy_module(name).SWEEP)


def signal_and_noise(scheduler: Any, step: int) -> tuple[float, float]:
    """`x_t = a·x0 + b·ε` at this step: flow matching has `a = 1 − σ, b = σ`; the other diffusers schedulers
    keep variance-exploding σ (`σ² = (1 − ᾱ)/ᾱ`), so `a = 1/√(1 + σ²)`, `b = σ·a`."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None or len(sigmas) == 0:
        return 1.0, 0.0
    sigma = float(sigmas[min(step, len(sigmas) - 1)])
    if "FlowMatch" in type(scheduler).__name__:
        return 1 - sigma, sigma
    signal = 1 / math.sqrt(1 + sigma**2)
    return signal, sigma * signal
