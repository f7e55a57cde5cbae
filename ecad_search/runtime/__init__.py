"""Runtime: hooks that make a stock diffusers pipeline follow a cache schedule."""

from .apply import ScheduleHandle, StepMismatchError, apply_schedule
from .compile import compile_components
from .hooks import CacheStats, StepCountError

__all__ = [
    "CacheStats",
    "ScheduleHandle",
    "StepCountError",
    "StepMismatchError",
    "apply_schedule",
    "compile_components",
]
