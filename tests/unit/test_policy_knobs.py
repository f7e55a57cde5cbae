"""Every knob of every policy is checked where the config is made: a NaN, a negative count or a string fails
with the knob's name, not mid-run or as a silently different policy."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from ecad_search.policies import PolicyError, policy_config, policy_names, policy_sweep
from ecad_search.policies.base import policy_module


def numeric_knobs() -> list[tuple[str, str, object]]:
    knobs = []
    for name in policy_names():
        for spec in fields(policy_module(name).CONFIG):
            if isinstance(spec.default, int | float) and not isinstance(spec.default, bool):
                knobs.append((name, spec.name, spec.default))
    return knobs


@pytest.mark.parametrize(("policy", "knob", "default"), numeric_knobs())
def test_every_numeric_knob_refuses_nan_negative_and_text(policy: str, knob: str, default: object) -> None:
    assert getattr(policy_config(policy, **{knob: default}), knob) == default
    for bad in (math.nan, math.inf, -1, "0.1", None):
        with pytest.raises(PolicyError, match=f"^{policy}'s {knob} must be "):
            policy_config(policy, **{knob: bad})
    if isinstance(default, int):
        with pytest.raises(PolicyError, match="a whole number"):
            policy_config(policy, **{knob: default + 0.5})


def test_flags_and_tables_are_checked_by_type() -> None:
    with pytest.raises(PolicyError, match="force_last must be true or false, got 1"):
        policy_config("dicache", force_last=1)
    with pytest.raises(PolicyError, match="ratios must be a list of finite numbers"):
        policy_config("magcache", ratios=[1.0, math.nan])
    with pytest.raises(PolicyError, match="coefficients must be a list of finite numbers"):
        policy_config("teacache", coefficients=["a"])
    assert policy_config("magcache", ratios=[1, 0.5]).ratios == (1, 0.5)


def test_shares_stay_within_zero_and_one() -> None:
    for policy, knob in (("magcache", "retention"), ("spectrum", "blend"), ("dicache", "ret_ratio")):
        assert getattr(policy_config(policy, **{knob: 1.0}), knob) == 1.0
        with pytest.raises(PolicyError, match=f"{knob} must be a finite number from 0 to 1, got 1.5"):
            policy_config(policy, **{knob: 1.5})


def test_every_swept_value_is_a_valid_knob() -> None:
    for name in policy_names():
        for knob, span in policy_sweep(name).items():
            for value in span.grid(6):
                policy_config(name, **{knob: value})
