"""Online cache policies: each decides while the pipeline runs whether a step (or a component) computes. One
module per policy (a config dataclass and its gate), on one base (`base.py`) and one runtime (`runtime.py`);
`calibration.py` measures the tables some of them need."""

from .base import Gate, KnobRange, Observation, PolicyConfig, PolicyError, policy_config, policy_names, policy_sweep
from .runtime import PolicyHandle, apply_policy

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
