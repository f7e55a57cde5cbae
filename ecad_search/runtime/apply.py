"""Apply a schedule to a pipeline or a bare transformer, and remove it again without a trace.

With a pipeline, the scheduler's `set_timesteps` is watched: it marks the start of every generation (so
repeated and interrupted calls stay aligned) and a step count that differs from the schedule's is refused
before any denoising happens. A bare transformer has no scheduler: each call is the next step and a new run
starts after the last step (or on `reset()`).
"""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Any, ClassVar

import torch
from diffusers.hooks import HookRegistry
from torch import nn

from ..models.blocks import component_modules
from ..schedule import CacheSchedule, ScheduleError
from .hooks import (
    COMPONENT_HOOK,
    STEP_HOOK,
    CacheStats,
    ComponentCacheHook,
    Forecaster,
    ScheduleRuntime,
    ScheduleStepHook,
)
from .prefix import PrefixLink, PrefixTape


class StepMismatchError(ScheduleError):
    """The pipeline was asked for a number of steps the schedule was not made for."""


class ScheduleHandle:
    """An applied schedule: a context manager, with explicit `enable()`/`disable()` for longer-lived use.
    With a `forecaster`, reused outputs are its forecasts. The hook names are class attributes, so a subclass
    (a per-component policy) can sit on a transformer that already follows a schedule."""

    step_hook: ClassVar[str] = STEP_HOOK
    component_hook: ClassVar[str] = COMPONENT_HOOK

    def __init__(self, target: Any, schedule: CacheSchedule, forecaster: Forecaster | None = None) -> None:
        self.schedule = schedule
        self.transformer = target_transformer(target)
        self.scheduler = None if isinstance(target, nn.Module) else getattr(target, "scheduler", None)
        self._modules = component_modules(self.transformer, schedule.groups)
        self._runtime = ScheduleRuntime(schedule, wrap_runs=self.scheduler is None, forecaster=forecaster)
        self._created_registries: list[nn.Module] = []
        self._watch: SchedulerWatch | None = None
        self.enabled = False

    @property
    def stats(self) -> CacheStats:
        """Peak kept outputs and bytes, and steps run, since this handle was made."""
        return self._runtime.stats

    def enable(self) -> ScheduleHandle:
        if self.enabled:
            return self
        existing = getattr(self.transformer, "_diffusers_hook", None)
        if existing is not None and existing.get_hook(self.step_hook) is not None:
            raise ScheduleError("a schedule is already applied to this transformer; disable it first")
        self._hook(self.transformer, ScheduleStepHook(self._runtime), self.step_hook)
        for key, module in self._modules.items():
            self._hook(module, ComponentCacheHook(self._runtime, key), self.component_hook)
        HookRegistry.check_if_exists_or_initialize(self.transformer).invalidate_child_registries_cache()
        if self.scheduler is not None:
            self._watch = SchedulerWatch(self.scheduler, self._start_run)
        self.enabled = True
        return self

    def disable(self) -> None:
        """Remove every hook and patch, leaving the pipeline as it was before `enable()`."""
        if not self.enabled:
            return
        self._runtime.forget_all()
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(self.step_hook, recurse=False)
        remove_hooks(self._modules.values(), self.component_hook, self._created_registries)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        self.enabled = False

    def swap(self, schedule: CacheSchedule, link: PrefixLink | None = None, tape: PrefixTape | None = None) -> None:
        """Follow another schedule of the same layout without touching the hooks: how an evaluator that
        scores many masks on one resident pipeline moves from one candidate to the next. With a `tape`, the
        steps `link` shares with earlier candidates come from it (see `runtime.prefix`)."""
        if schedule.groups != self.schedule.groups:
            raise ScheduleError("the new schedule's block groups differ from the applied one's; apply it instead")
        self.schedule = schedule
        self._runtime.load(schedule, link, tape)

    def reset(self) -> None:
        """Forget the current run: the next transformer call is step 0."""
        self._runtime.forget_all()

    def __enter__(self) -> ScheduleHandle:
        return self.enable()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disable()

    def _hook(self, module: nn.Module, hook: Any, name: str) -> None:
        add_hook(module, hook, name, self._created_registries)

    def _start_run(self, model_calls: int) -> None:
        steps = self.schedule.num_steps
        if model_calls != steps:
            raise StepMismatchError(
                f"the schedule has {steps} steps but the pipeline was set up for {model_calls} transformer calls; "
                f"call it with num_inference_steps={steps} or use a {model_calls}-step schedule"
            )
        self._runtime.start_run()


class SchedulerWatch:
    """Calls `on_start(model_calls)` after every `scheduler.set_timesteps`: the start of each generation,
    with its number of transformer calls. `stop()` restores the scheduler exactly."""

    def __init__(self, scheduler: Any, on_start: Any) -> None:
        self.scheduler = scheduler
        self._had_own = "set_timesteps" in vars(scheduler)
        self._previous = vars(scheduler).get("set_timesteps")
        original = scheduler.set_timesteps

        @functools.wraps(original)
        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            on_start(len(scheduler.timesteps))
            return result

        scheduler.set_timesteps = set_timesteps

    def stop(self) -> None:
        if self._had_own:
            self.scheduler.set_timesteps = self._previous
        else:
            vars(self.scheduler).pop("set_timesteps", None)


def add_hook(module: nn.Module, hook: Any, name: str, created: list[nn.Module]) -> None:
    """Register a diffusers hook, noting in `created` a module that had no hook registry before."""
    if not hasattr(module, "_diffusers_hook"):
        created.append(module)
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def remove_hooks(modules: Any, name: str, created: list[nn.Module]) -> None:
    """Remove the named hook from each module, and the registries `add_hook` created once they are empty, so
    every module is as it was before."""
    for module in modules:
        module._diffusers_hook.remove_hook(name, recurse=False)
    for module in created:
        if not module._diffusers_hook.hooks:
            del module._diffusers_hook
            _drop_restored_forward(module)
    created.clear()


def _drop_restored_forward(module: nn.Module) -> None:
    """Removing its last hook, diffusers sets `module.forward` to the bound method it wrapped; drop it so the
    class's own is found again, but keep a forward of the user's (a compiled one, `compile_components`)."""
    forward = vars(module).get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.forward


def apply_schedule(pipe_or_transformer: Any, schedule: CacheSchedule) -> ScheduleHandle:
    """Make a pipeline (or bare transformer) follow `schedule` until the handle is disabled.

    Returns the enabled handle; use it as a context manager to restore the pipeline on exit::

        with apply_schedule(pipe, load_schedule("fast.json")):
            image = pipe(prompt, num_inference_steps=20).images[0]
    """
    return ScheduleHandle(pipe_or_transformer, schedule).enable()


def transformer_of(pipe: Any) -> nn.Module:
    """A pipeline's transformer, refused when it is compiled whole (`compile_whole_error`)."""
    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, nn.Module):
        raise ScheduleError(f"{type(pipe).__name__} has no `transformer`; pass a DiT pipeline or the transformer")
    return target_transformer(transformer)


def target_transformer(target: Any) -> nn.Module:
    """The transformer of a pipeline, or `target` itself, refused when compiled whole: traced by Dynamo, the
    per-step decisions would recompile it every step until Dynamo gives up and runs it eagerly."""
    if not isinstance(target, nn.Module):
        return transformer_of(target)
    if isinstance(target, torch._dynamo.eval_frame.OptimizedModule) or target._compiled_call_impl is not None:
        raise ScheduleError(
            f"this {type(target).__name__} is compiled whole, so each step's decision would recompile it; "
            "compile its components instead: ecad_search.compile_components(pipe)"
        )
    return target
