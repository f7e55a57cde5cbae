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

A policy is one module here: a config dataclass (its knobs, with the reference's defaults) whose `gate()`
makes the per-run decision state, and a `CONFIG` line; `POLICIES` names each one. Policies that work per
component rather than per step (FORA, TaylorSeer) override `PolicyConfig.apply`. `apply_policy` works like
`apply_schedule`.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from types import TracebackType
from typing import Any, ClassVar, cast

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState
from torch import nn

from ..models.blocks import block_input, block_output, block_result, discover_block_groups, token_grid
from ..schedule import BlockGroup, CacheSchedule, ScheduleError
from .apply import SchedulerWatch, add_hook, remove_hooks, transformer_of
from .hooks import StepHook

# Registered policies: command-line name → module under ecad_search.runtime.
POLICIES = {
    "seacache": "seacache",
    "sencache": "sencache",
    "dicache": "dicache",
    "spectrum": "spectrum",
    "teacache": "teacache",
    "magcache": "magcache",
    "first-block-cache": "first_block_cache",
    "taylorseer": "taylorseer",
    "fora": "fora",
}
POLICY_STEP_HOOK = "ecad_search_policy_step"
POLICY_BLOCK_HOOK = "ecad_search_policy_block"


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

    @property
    def leading_blocks(self) -> int:
        return 0

    def knobs(self) -> dict[str, Any]:
        return asdict(self)

    @abstractmethod
    def gate(self) -> Gate: ...

    def apply(self, pipe: Any) -> Any:
        """Make `pipe` follow this policy; step-level policies share `PolicyHandle`, others bring their own."""
        return PolicyHandle(pipe, self).enable()


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


def policy_config(name: str, **knobs: Any) -> PolicyConfig:
    """The named policy's config with these knobs (the rest at their defaults)."""
    if name not in POLICIES:
        raise PolicyError(f"unknown policy '{name}': use one of {', '.join(POLICIES)}")
    config = importlib.import_module(f".{POLICIES[name]}", __package__).CONFIG
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
    if name not in POLICIES:
        raise PolicyError(f"unknown policy '{name}': use one of {', '.join(POLICIES)}")
    return dict(importlib.import_module(f".{POLICIES[name]}", __package__).SWEEP)


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


@dataclass
class PolicyRunState(BaseState):
    """One run of one cache context: its step, the gate, this call's inputs, the cached residual and every
    decision so far."""

    step: int = 0
    gate: Gate | None = None
    call: tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None = None
    seen: Observation | None = None
    reference: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    reusing: bool = False
    decisions: list[bool] = field(default_factory=list)

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.step, self.gate, self.call, self.seen = 0, None, None, None
        self.reference, self.residual, self.reusing = None, None, False
        self.decisions = []


@dataclass
class FinishedRun:
    """What one finished run did: per step, computed or not, and the gate's own MACs."""

    decisions: list[bool]
    overhead_macs: float


class PolicyRuntime:
    """What the hooks of one applied policy share: the config, the blocks in execution order, the scheduler,
    the active run and the run's step count."""

    def __init__(self, config: PolicyConfig, transformer: nn.Module, blocks: list[nn.Module], scheduler: Any) -> None:
        self.config, self.transformer, self.blocks, self.scheduler = config, transformer, blocks, scheduler
        self.leading = config.leading_blocks
        if not 0 <= self.leading < len(blocks):
            raise PolicyError(f"{config.name} runs {self.leading} leading blocks but the stack has {len(blocks)}")
        self.num_steps = 0
        self.active: PolicyRunState | None = None
        self.states: list[PolicyRunState] = []
        self.finished: list[FinishedRun] = []

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.forget_all()

    def forget_all(self) -> None:
        for state in self.states:
            state.reset()

    def begin_call(self, state: PolicyRunState, args: tuple, kwargs: dict[str, Any]) -> None:
        if not any(state is known for known in self.states):
            self.states.append(state)
        if state.gate is None:
            state.gate = self.config.gate()
        latent = args[0] if args else kwargs["hidden_states"]
        state.call = (latent, kwargs.get("timestep", args[2] if len(args) > 2 else None), kwargs)
        self.active = state

    def end_call(self) -> None:
        state = self.active
        if state is not None:
            state.step += 1
            if state.step == self.num_steps:
                gate = cast(Gate, state.gate)
                self.finished.append(FinishedRun(list(state.decisions), gate.overhead_macs))
                state.reset()
        self.active = None

    def observation(self, state: PolicyRunState, block: nn.Module, args: tuple, kwargs: dict) -> Observation:
        latent, timestep, call_kwargs = cast(tuple, state.call)
        signal, noise = signal_and_noise(self.scheduler, state.step)
        return Observation(
            step=state.step,
            num_steps=self.num_steps,
            latent=latent,
            timestep=timestep,
            signal=signal,
            noise=noise,
            grid=token_grid(self.transformer, latent, call_kwargs),
            stack_input=block_input(args, kwargs),
            first_block=block,
            block_kwargs=kwargs,
        )

    def decide(self, state: PolicyRunState, probe: torch.Tensor | None) -> None:
        seen = cast(Observation, state.seen)
        seen.probe = probe
        compute = cast(Gate, state.gate).decide(seen) or state.residual is None
        state.decisions.append(compute)
        state.reusing = not compute
        state.reference = seen.stack_input if self.config.residual_from_input else probe

    def run_block(self, index: int, forward: Any, args: tuple, kwargs: dict) -> Any:
        """Leading blocks always run (the last of them decides the step); with none, block 0 decides before it
        runs. After the decision a reused step passes every block's input through, and the last block returns
        the gate's reused output; a computed step runs them and keeps the stack's residual."""
        state = self.active
        block = self.blocks[index]
        if state is None or state.call is None:
            return forward(*args, **kwargs)
        if index == 0:
            state.seen = self.observation(state, block, args, kwargs)
        if index < self.leading:
            output = forward(*args, **kwargs)
            if index == self.leading - 1:
                self.decide(state, block_output(block, output))
            return output
        if index == 0:
            self.decide(state, None)
        last = index == len(self.blocks) - 1
        gate, seen = cast(Gate, state.gate), cast(Observation, state.seen)
        if state.reusing:
            if not last:
                return block_result(block, args, kwargs, block_input(args, kwargs))
            # A step computes while there is no residual yet, so a reused step always has one.
            reference, residual = cast(torch.Tensor, state.reference), cast(torch.Tensor, state.residual)
            return block_result(block, args, kwargs, gate.reused_output(seen, reference, residual))
        output = forward(*args, **kwargs)
        if last:
            hidden = block_output(block, output)
            state.residual = hidden - cast(torch.Tensor, state.reference)
            gate.observe(seen, hidden)
        return output


class PolicyStepHook(StepHook):
    """The step hook of a policy: also hands the runtime the transformer call's inputs."""

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.runtime.begin_call(self.current_state(), args, kwargs)
        return args, kwargs


class _BlockHook(ModelHook):
    def __init__(self, runtime: PolicyRuntime, index: int) -> None:
        super().__init__()
        self.runtime, self.index = runtime, index

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.runtime.run_block(self.index, self.fn_ref.original_forward, args, kwargs)


class PolicyHandle:
    """An applied step-level policy: a context manager, with `enable()`/`disable()`. `runs` holds every
    finished run (per step: computed or not, and the gate's own MACs); `decisions` their decisions."""

    def __init__(self, pipe: Any, config: PolicyConfig) -> None:
        self.config = config
        self.transformer = transformer_of(pipe)
        self.scheduler = getattr(pipe, "scheduler", None)
        if self.scheduler is None:
            raise PolicyError("a policy needs the pipeline (its scheduler says where each run starts)")
        self.groups = discover_block_groups(self.transformer)
        self.blocks = [block for group in self.groups for block in getattr(self.transformer, group.name)]
        self._runtime = PolicyRuntime(config, self.transformer, self.blocks, self.scheduler)
        self._created: list[nn.Module] = []
        self._watch: SchedulerWatch | None = None
        self.enabled = False

    @property
    def runs(self) -> list[FinishedRun]:
        return self._runtime.finished

    @property
    def decisions(self) -> list[list[bool]]:
        return [run.decisions for run in self._runtime.finished]

    def enable(self) -> PolicyHandle:
        if self.enabled:
            return self
        add_hook(self.transformer, PolicyStepHook(self._runtime, PolicyRunState), POLICY_STEP_HOOK, self._created)
        for index, block in enumerate(self.blocks):
            add_hook(block, _BlockHook(self._runtime, index), POLICY_BLOCK_HOOK, self._created)
        HookRegistry.check_if_exists_or_initialize(self.transformer).invalidate_child_registries_cache()
        self._watch = SchedulerWatch(self.scheduler, self._runtime.start)
        self.enabled = True
        return self

    def disable(self) -> None:
        if not self.enabled:
            return
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(POLICY_STEP_HOOK, recurse=False)
        remove_hooks(self.blocks, POLICY_BLOCK_HOOK, self._created)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        self.enabled = False

    def realised_schedule(self, template: CacheSchedule, run: int = -1) -> CacheSchedule:
        """A finished run's decisions as a static schedule: what actually ran, block by block (the leading
        blocks run on every step)."""
        return realised_mask(template, self.groups, self._runtime.finished[run].decisions, self.config)

    def __enter__(self) -> PolicyHandle:
        return self.enable()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disable()


def realised_mask(
    template: CacheSchedule, groups: tuple[BlockGroup, ...], decisions: list[bool], config: PolicyConfig
) -> CacheSchedule:
    """Per-step decisions of a step-level policy as a schedule on the template's layout: a computed step runs
    every component, a reused one none, except the leading blocks (in execution order), which always run."""
    steps = np.asarray(decisions, dtype=bool)
    masks, leading = {}, config.leading_blocks
    for group in groups:
        mask = np.repeat(steps[:, None, None], group.num_blocks, axis=1).repeat(len(group.components), axis=2)
        mask[:, : min(leading, group.num_blocks), :] = True
        leading = max(0, leading - group.num_blocks)
        masks[group.name] = mask
    return template.with_metadata(masks=masks, name=config.name, provenance=policy_provenance(config))


def policy_provenance(config: PolicyConfig) -> dict[str, Any]:
    """Where a realised mask came from: the policy, its knobs, and what its skipped steps got instead."""
    return {"method": "policy", "policy": config.name, "knobs": config.knobs(), "skipped": config.skipped}


def apply_policy(pipe: Any, config: PolicyConfig) -> PolicyHandle:
    """Make a pipeline follow an online policy until the handle is disabled (a context manager)::

    with apply_policy(pipe, policy_config("teacache", threshold=0.2)) as handle:
        image = pipe(prompt, num_inference_steps=20).images[0]
    handle.decisions[-1]          # per step: computed (True) or reused
    """
    return config.apply(pipe)
