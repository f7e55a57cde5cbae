"""Online cache policies on the same hook machinery as schedules: a policy decides while the pipeline runs,
step by step, whether the transformer's block stack runs or its output is rebuilt from a cached residual.

Step-level residual caching (TeaCache, First-Block Cache and the others of that family): on a computed step
the stack's residual `R = h_out − h_ref` is kept, where `h_ref` is the stack's input, or block 0's output for
policies that always run block 0; on a reused step the blocks after the reference return their input
unchanged and the last block returns `h_ref + R`. Everything outside the stack (embeddings, the final norm and
projection) always runs with the current timestep. A step is decided once for the whole batch, so PixArt's
batched guidance pair takes one decision per step.

A policy is one module here: a config dataclass (its knobs, with the reference's defaults) whose `gate()`
makes the per-run decision state. `POLICIES` names each one; `apply_policy` works like `apply_schedule`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from types import TracebackType
from typing import Any, ClassVar, cast

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState
from torch import nn

from ..models.blocks import discover_block_groups
from ..schedule import CacheSchedule, ScheduleError
from .apply import SchedulerWatch, add_hook, remove_hooks, transformer_of
from .hooks import StepHook

# Registered policies: command-line name → module under ecad_search.runtime.
POLICIES = {"first-block-cache": "first_block_cache", "spectrum": "spectrum", "teacache": "teacache"}
POLICY_STEP_HOOK = "ecad_search_policy_step"
POLICY_BLOCK_HOOK = "ecad_search_policy_block"


class PolicyError(ScheduleError):
    """A policy that cannot run on this pipeline, or an unknown policy or knob."""


class Gate(ABC):
    """One run's decision state: told each step's feature, says whether the stack computes; on a reused step,
    what the stack's output is (the cached residual on its reference, unless the policy forecasts)."""

    @abstractmethod
    def decide(self, step: int, num_steps: int, feature: torch.Tensor) -> bool:
        """True: run the stack (and refresh the cache); False: reuse the cached residual."""

    def observe(self, step: int, num_steps: int, output: torch.Tensor) -> None:
        """The stack's output on a computed step (a forecasting policy keeps it; the others need nothing)."""
        return None

    def reused_output(
        self, step: int, num_steps: int, reference: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        return reference + residual


@dataclass(frozen=True)
class PolicyConfig:
    """A policy's knobs. Subclasses set `name`, say whether block 0 always runs, and give the feature their
    gate compares between steps."""

    name: ClassVar[str] = ""
    runs_first_block: ClassVar[bool] = False

    def knobs(self) -> dict[str, Any]:
        return asdict(self)

    @abstractmethod
    def gate(self) -> Gate: ...

    @abstractmethod
    def feature(
        self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], block_output: torch.Tensor | None
    ) -> torch.Tensor:
        """What the gate compares: computed from block 0's input (and its output when it always runs)."""


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
    return config(**knobs)


@dataclass
class PolicyRunState(BaseState):
    """One run of one cache context: its step, the gate, the cached residual and every decision so far."""

    step: int = 0
    gate: Gate | None = None
    reference: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    reusing: bool = False
    decisions: list[bool] = field(default_factory=list)

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.step, self.gate, self.reference, self.residual, self.reusing = 0, None, None, None, False
        self.decisions = []


class PolicyRuntime:
    """What the hooks of one applied policy share: the config, the active run and the run's step count."""

    def __init__(self, config: PolicyConfig, num_blocks: int) -> None:
        self.config, self.num_blocks = config, num_blocks
        self.num_steps = 0
        self.active: PolicyRunState | None = None
        self.states: list[PolicyRunState] = []
        self.finished: list[list[bool]] = []

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.forget_all()

    def forget_all(self) -> None:
        for state in self.states:
            state.reset()

    def begin_call(self, state: PolicyRunState) -> None:
        if not any(state is known for known in self.states):
            self.states.append(state)
        if state.gate is None:
            state.gate = self.config.gate()
        self.active = state

    def end_call(self) -> None:
        state = self.active
        if state is not None:
            state.step += 1
            if state.step == self.num_steps:
                self.finished.append(list(state.decisions))
                state.reset()
        self.active = None

    def head(self, block: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        """Block 0: compute the feature, decide the step, and run block 0 unless the policy skips it too."""
        state = self.active
        hidden = args[0] if args else kwargs["hidden_states"]
        if state is None or state.gate is None:
            return forward(*args, **kwargs)
        output = forward(*args, **kwargs) if self.config.runs_first_block else None
        feature = self.config.feature(block, hidden, kwargs, output)
        compute = state.gate.decide(state.step, self.num_steps, feature) or state.residual is None
        state.decisions.append(compute)
        state.reusing = not compute
        state.reference = output if self.config.runs_first_block else hidden
        if output is None and compute:
            output = forward(*args, **kwargs)
        return output if output is not None else hidden

    def body(self, forward: Any, args: tuple, kwargs: dict, last: bool) -> Any:
        """Blocks after the first: skipped on a reused step (the last one adds the cached residual)."""
        state = self.active
        if state is None or state.reference is None:
            return forward(*args, **kwargs)
        if state.reusing:
            if not last:
                return args[0] if args else kwargs["hidden_states"]
            # The head computes while there is no residual yet, so a reused step always has one.
            gate, residual = cast(Gate, state.gate), cast(torch.Tensor, state.residual)
            return gate.reused_output(state.step, self.num_steps, state.reference, residual)
        output = forward(*args, **kwargs)
        if last:
            state.residual = output - state.reference
            if state.gate is not None:
                state.gate.observe(state.step, self.num_steps, output)
        return output


class _BlockHook(ModelHook):
    def __init__(self, runtime: PolicyRuntime, index: int) -> None:
        super().__init__()
        self.runtime, self.index = runtime, index

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        if self.index == 0:
            return self.runtime.head(module, forward, args, kwargs)
        return self.runtime.body(forward, args, kwargs, last=self.index == self.runtime.num_blocks - 1)


class PolicyHandle:
    """An applied policy: a context manager, with `enable()`/`disable()`; `decisions` holds every finished
    run's per-step decisions (True: computed)."""

    def __init__(self, pipe: Any, config: PolicyConfig) -> None:
        self.config = config
        self.transformer = transformer_of(pipe)
        self.scheduler = getattr(pipe, "scheduler", None)
        if self.scheduler is None:
            raise PolicyError("a policy needs the pipeline (its scheduler says where each run starts)")
        groups = discover_block_groups(self.transformer)
        if len(groups) != 1 or groups[0].components != ("attn1", "attn2", "ff"):
            raise PolicyError(
                f"{config.name} runs on single-stack PixArt-style transformers for now, not on "
                f"{type(self.transformer).__name__}"
            )
        self.groups = groups
        self.blocks = list(getattr(self.transformer, groups[0].name))
        self._runtime = PolicyRuntime(config, len(self.blocks))
        self._created: list[nn.Module] = []
        self._watch: SchedulerWatch | None = None
        self.enabled = False

    @property
    def decisions(self) -> list[list[bool]]:
        return self._runtime.finished

    def enable(self) -> PolicyHandle:
        if self.enabled:
            return self
        add_hook(self.transformer, StepHook(self._runtime, PolicyRunState), POLICY_STEP_HOOK, self._created)
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
        """A finished run's decisions as a static schedule: what actually ran, block by block (block 0 runs
        on every step for policies that always run it)."""
        decisions = np.asarray(self.decisions[run], dtype=bool)
        group = self.groups[0]
        mask = np.repeat(decisions[:, None, None], group.num_blocks, axis=1).repeat(len(group.components), axis=2)
        if self.config.runs_first_block:
            mask[:, 0, :] = True
        provenance = {"method": "policy", "policy": self.config.name, "knobs": self.config.knobs()}
        return template.with_metadata(masks={group.name: mask}, name=self.config.name, provenance=provenance)

    def __enter__(self) -> PolicyHandle:
        return self.enable()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disable()


def apply_policy(pipe: Any, config: PolicyConfig) -> PolicyHandle:
    """Make a pipeline follow an online policy until the handle is disabled (a context manager)::

        with apply_policy(pipe, policy_config("teacache", threshold=0.2)) as handle:
            image = pipe(prompt, num_inference_steps=20).images[0]
        handle.decisions[-1]          # per step: computed (True) or reused
    """
    return PolicyHandle(pipe, config).enable()
