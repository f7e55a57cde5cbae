"""Online cache policies: each decides while the pipeline runs whether a step (or a component) computes. One
module per policy (a config dataclass and its gate), on one base (`base.py`) and one runtime (`runtime.py`);
`calibration.py` measures the tables some of them need.

A config and its knob checks need no torch (the modules import it where they compute, the runtime on first
use), so a bad knob is answered before any model or library loads."""

from typing import Any

from .base import Gate, KnobRange, Observation, PolicyConfig, PolicyError, policy_config, policy_names, policy_sweep

__all__ = [
    "Gate",
    "KnobRange",
    "Observation",
    "PolicyConfig",
    "PolicyError",
    "PolicyHandle",
    "apply_policy",
    "policy_config",
    "policy_names",
    "policy_sweep",
]


def __getattr__(name: str) -> Any:
    """`PolicyHandle` and `apply_policy` import the runtime (torch, diffusers) on first use."""
    if name in ("PolicyHandle", "apply_policy"):
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
