"""diffusers hooks that make a stock transformer follow a cache schedule.

One `StepHook` sits on the transformer: each call is one denoising step of the current run. One
`ComponentCacheHook` sits on every scheduled sub-module (e.g. `transformer_blocks.3.attn2`): at a computing
step it runs the module and keeps the output only if the next step reuses it; at a reusing step it returns
the kept output without running the module. The block around the component is untouched, so the adaLN
gate and the residual add are recomputed with the current step's modulation.

A schedule with a forecast fill (`fill="taylor1"`, …), or a runtime given a `Forecaster` (TaylorSeer), keeps
instead of the output the forecast's terms at each computing step that a later skipped step needs, returns the
forecast at a skipped step, and lets the terms go after the lane's last skipped step; reuse never touches that
path.

Run state is kept per diffusers cache context (FLUX opens "cond"/"uncond" contexts; PixArt opens none and
uses one default context), so a true-CFG pipeline that calls the transformer twice per step stays exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from ..schedule import CacheSchedule, later_skips, reuse_plan
from .forecast import Forecast, Forecaster, schedule_forecaster
from .prefix import Key, PrefixLink, PrefixTape, RunKey, nbytes

STEP_HOOK = "ecad_search_step"
COMPONENT_HOOK = "ecad_search_component"
_DEFAULT_CONTEXT = CacheContext("ecad_search_default")


class StepCountError(RuntimeError):
    """The transformer was called more often in one run than the schedule has steps."""


@dataclass
class RunState(BaseState):
    """Where one run is: its step, the component outputs kept for later steps, and, when later candidates
    fork from this run, the latest output of each component they reuse (given up past the tape's budget)."""

    step: int = 0
    kept: dict[Key, Any] = field(default_factory=dict)
    forecast_macs: float = 0.0
    latest: dict[Key, Any] = field(default_factory=dict)
    latest_bytes: int = 0
    over_budget: bool = False
    replaying: bool = False

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.step = 0
        self.kept.clear()
        self.forecast_macs = 0.0
        self.latest.clear()
        self.latest_bytes = 0
        self.over_budget = False
        self.replaying = False


@dataclass
class CacheStats:
    """What the runtime held: the peak number of kept outputs (a forecast's terms of one component count as
    one) and their bytes, over all runs so far; and the MACs a forecast fill spent in runs that ended."""

    kept_tensors: int = 0
    kept_bytes: int = 0
    peak_tensors: int = 0
    peak_bytes: int = 0
    steps_run: int = 0
    forecast_macs: float = 0.0

    def add(self, output: Any, sign: int) -> None:
        self.kept_tensors += sign
        self.kept_bytes += sign * _nbytes(output)
        self.peak_tensors = max(self.peak_tensors, self.kept_tensors)
        self.peak_bytes = max(self.peak_bytes, self.kept_bytes)


class ScheduleRuntime:
    """State shared by the hooks of one applied schedule: the masks, the reuse plan and the active run; the
    fill of skipped outputs (a `forecaster` given here, else the schedule's own); `on_finish(state)` is told
    when a run has run its last step."""

    def __init__(self, schedule: CacheSchedule, *, wrap_runs: bool, forecaster: Forecaster | None = None) -> None:
        self.wrap_runs = wrap_runs
        self.given_forecaster = forecaster
        self.forecaster: Forecaster | None = None
        self.on_finish: Callable[[RunState], None] | None = None
        self.active: RunState | None = None
        self.states: list[RunState] = []
        self.stats = CacheStats()
        self.link = PrefixLink()
        self.tape: PrefixTape | None = None
        self.run_index = -1
        self.load(schedule)

    def load(self, schedule: CacheSchedule, link: PrefixLink | None = None, tape: PrefixTape | None = None) -> None:
        """Follow another mask of the same layout from the next run on (hooks stay where they are); with a
        `tape`, take the shared prefix `link` names from it and leave on it what later candidates take."""
        self.forget_all()
        self.link = PrefixLink() if tape is None or link is None else link
        self.tape = tape
        self.run_index = -1
        self.schedule = schedule
        self.num_steps = schedule.num_steps
        self.compute = [np.asarray(mask) for _, _, mask in schedule.iter_groups()]
        self.forecaster = self.given_forecaster or schedule_forecaster(schedule)
        self.needed = [later_skips(mask) for mask in self.compute]
        plans = [reuse_plan(mask) for mask in self.compute]
        self.store = [store for store, _ in plans]
        self.release = [release for _, release in plans]

    def begin_call(self, state: RunState) -> None:
        if not any(state is known for known in self.states):
            self.states.append(state)
        if state.step >= self.num_steps:
            if not self.wrap_runs:
                raise StepCountError(
                    f"the transformer was called more than {self.num_steps} times in one run, but the schedule "
                    f"has {self.num_steps} steps; use a scheduler with one model call per step"
                )
            self.forget(state)
        self.active = state

    def end_call(self) -> None:
        state = self.active
        if state is not None:
            state.step += 1
            self.stats.steps_run += 1
            if state.step == self.num_steps and self.on_finish is not None:
                self.on_finish(state)
        self.active = None

    def start_run(self) -> None:
        """A pipeline call begins: its runs start afresh, and the next pipeline call of this mask is the next
        entry of the tape."""
        self.forget_all()
        self.run_index += 1

    def run_step(self, forward: Any, args: tuple, kwargs: dict) -> Any:
        """One transformer call of the active run: from the tape within the shared prefix, else computed."""
        state, tape, link = self.active, self.tape, self.link
        if state is None or tape is None:
            return forward(*args, **kwargs)
        run: RunKey = (self.run_index, next(i for i, known in enumerate(self.states) if known is state))
        step = state.step
        if step == 0:
            state.replaying = link.replay > 0 and tape.can_replay(run, link.replay, self.num_steps)
        if state.replaying and step < link.replay:
            return tape.output(run, step)
        if state.replaying and step == link.replay:
            self.take_snapshot(state, tape.snapshot(run, step))
        if step in link.forks and not state.over_budget:
            tape.keep_snapshot(run, step, {key: state.latest[key] for key in link.forks[step]})
        output = forward(*args, **kwargs)
        if step < link.record:
            tape.record_output(run, step, output)
        return output

    def take_snapshot(self, state: RunState, snapshot: dict[Key, Any]) -> None:
        """Hold what an independent run would hold at the fork step: the snapshot's outputs that this mask
        reuses there (the same tensors), and the latest outputs this run's own forks need."""
        step, tracked = state.step, self.link.tracked
        for key, output in snapshot.items():
            g, b, c = key
            if not self.compute[g][step, b, c]:
                state.kept[key] = output
                self.stats.add(output, +1)
            if key in tracked:
                self.hold_latest(state, key, output)

    def hold_latest(self, state: RunState, key: Key, output: Any) -> None:
        """Hold a tracked component's latest output for this run's snapshots, unless they could not fit the
        tape's budget anyway: then hold nothing, so sharing never costs more memory than it was given."""
        if state.over_budget or self.tape is None:
            return
        state.latest_bytes += _nbytes(output) - _nbytes(state.latest.get(key))
        state.latest[key] = output
        if state.latest_bytes > self.tape.budget_bytes:
            state.latest.clear()
            state.over_budget = True

    def forget(self, state: RunState) -> None:
        self.stats.forecast_macs += state.forecast_macs
        for output in state.kept.values():
            self.stats.add(output, -1)
            if isinstance(output, Forecast):
                self.stats.forecast_macs += output.macs
        state.reset()

    def forget_all(self) -> None:
        """Start every run afresh (a new generation begins, or the schedule is removed)."""
        for state in self.states:
            self.forget(state)
        self.states.clear()
        self.active = None

    def run_component(self, key: tuple[int, int, int], forward: Any, args: tuple, kwargs: dict) -> Any:
        state = self.active
        if state is None:
            return forward(*args, **kwargs)
        g, b, c = key
        step = state.step
        if self.compute[g][step, b, c]:
            output = forward(*args, **kwargs)
            if key in self.link.tracked:
                self.hold_latest(state, key, output)
            if self.forecaster is None:
                if self.store[g][step, b, c]:
                    state.kept[key] = output
                    self.stats.add(output, +1)
            elif self.needed[g][step, b, c]:
                self.replace(state, key, self.forecaster.update(state.kept.get(key), output, step))
            else:
                self.drop(state, key)
            return output
        if self.forecaster is not None:
            output = self.forecaster.forecast(state.kept[key], step)
            if not self.needed[g][step, b, c]:
                self.drop(state, key)
            return output
        output = state.kept[key]
        if self.release[g][step, b, c]:
            del state.kept[key]
            self.stats.add(output, -1)
        return output

    def replace(self, state: RunState, key: tuple[int, int, int], kept: Forecast) -> None:
        """Keep a forecaster's new terms for a component in place of its old ones."""
        if key in state.kept:
            self.stats.add(state.kept[key], -1)
        state.kept[key] = kept
        self.stats.add(kept, +1)

    def drop(self, state: RunState, key: tuple[int, int, int]) -> None:
        """Let a component's terms go once no later step forecasts from them; their MACs stay counted."""
        kept = state.kept.pop(key, None)
        if kept is not None:
            state.forecast_macs += kept.macs
            self.stats.add(kept, -1)


class StepHook(ModelHook):
    """Marks the start and end of each transformer call, i.e. of each denoising step, for a runtime with
    `begin_call(state)`, `end_call()` and `forget_all()` (a schedule's, or an online policy's): one `state`
    per diffusers cache context."""

    _is_stateful = True

    def __init__(self, runtime: Any, state: type[BaseState] = RunState) -> None:
        super().__init__()
        self.runtime = runtime
        self.state_manager = StateManager(state)

    def current_state(self) -> Any:
        try:
            self.state_manager.context  # noqa: B018 - raises when no cache context is set
        except ValueError:
            self.state_manager.set_context(_DEFAULT_CONTEXT)
        return self.state_manager.get_state()

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.runtime.begin_call(self.current_state())
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.runtime.end_call()
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.runtime.forget_all()
        self.state_manager.reset()
        return module


class ScheduleStepHook(StepHook):
    """The step hook of a schedule: the runtime may answer a step of a shared prefix without running the
    transformer."""

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.runtime.run_step(self.fn_ref.original_forward, args, kwargs)


class ComponentCacheHook(ModelHook):
    """Computes or reuses one component of one block according to the schedule."""

    def __init__(self, runtime: ScheduleRuntime, key: tuple[int, int, int]) -> None:
        super().__init__()
        self.runtime = runtime
        self.key = key

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.runtime.run_component(self.key, self.fn_ref.original_forward, args, kwargs)


def _nbytes(output: Any) -> int:
    """Bytes of a kept output: a tensor, a tuple of them, or a forecaster's terms."""
    return nbytes(output.terms if isinstance(output, Forecast) else output)
