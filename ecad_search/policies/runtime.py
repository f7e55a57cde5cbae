"""Applying a policy: the hooks, the per-run state, and the handles that report what each run decided (a
step-level policy's, and a per-component policy's, which is a schedule handle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState
from torch import nn

from ..models.blocks import block_input, block_output, block_result, discover_block_groups, token_grid
from ..runtime.apply import ScheduleHandle, SchedulerWatch, add_hook, remove_hooks, transformer_of
from ..runtime.hooks import RunState, StepHook
from ..schedule import BlockGroup, CacheSchedule
from .base import (
    ComponentPolicyConfig,
    Gate,
    Observation,
    PolicyConfig,
    PolicyError,
    policy_provenance,
    signal_and_noise,
)

POLICY_STEP_HOOK = "ecad_search_policy_step"
POLICY_BLOCK_HOOK = "ecad_search_policy_block"


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


class ComponentPolicyHandle(ScheduleHandle):
    """An applied per-component policy: a schedule handle (own hook names, so it can sit on a transformer that
    already follows a schedule) whose schedule is rebuilt for each run's step count. `runs` holds every
    finished run (per step: computed or not, and the forecaster's MACs); `decisions` their decisions."""

    step_hook = "ecad_search_component_policy_step"
    component_hook = "ecad_search_component_policy"

    def __init__(self, pipe: Any, config: ComponentPolicyConfig) -> None:
        if getattr(pipe, "scheduler", None) is None:
            raise PolicyError("a policy needs the pipeline (its scheduler says where each run starts)")
        self.config = config
        self.groups = discover_block_groups(transformer_of(pipe))
        # The step count is known only once the pipeline sets its timesteps; until then a one-step placeholder.
        super().__init__(pipe, config.schedule(self.groups, 1), config.forecaster())
        self._runtime.on_finish = self._finish
        self.runs: list[FinishedRun] = []

    @property
    def decisions(self) -> list[list[bool]]:
        return [run.decisions for run in self.runs]

    def enable(self) -> ComponentPolicyHandle:
        super().enable()
        return self

    def __enter__(self) -> ComponentPolicyHandle:
        return self.enable()

    def realised_schedule(self, template: CacheSchedule, run: int = -1) -> CacheSchedule:
        """A finished run as a static schedule on the template's layout: the policy's own mask."""
        return realised_mask(template, self.groups, self.runs[run].decisions, self.config)

    def _start_run(self, model_calls: int) -> None:
        if model_calls != self.schedule.num_steps:
            self.swap(self.config.schedule(self.groups, model_calls))
        super()._start_run(model_calls)

    def _finish(self, state: RunState) -> None:
        masks = self._runtime.compute
        decisions = [all(bool(mask[step].all()) for mask in masks) for step in range(self.schedule.num_steps)]
        spent = state.forecast_macs + sum(kept.macs for kept in state.kept.values())
        overhead = spent if self._runtime.forecaster is not None else 0.0
        self.runs.append(FinishedRun(decisions, overhead))


def apply_policy(pipe: Any, config: PolicyConfig) -> PolicyHandle | ComponentPolicyHandle:
    """Make a pipeline follow an online policy until the handle is disabled (a context manager)::

    with apply_policy(pipe, policy_config("teacache", threshold=0.2)) as handle:
        image = pipe(prompt, num_inference_steps=20).images[0]
    handle.decisions[-1]          # per step: computed (True) or reused
    """
    if isinstance(config, ComponentPolicyConfig):
        return ComponentPolicyHandle(pipe, config).enable()
    return PolicyHandle(pipe, config).enable()
