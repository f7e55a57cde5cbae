"""Hand-made schedule families: the baselines a learned schedule must beat, and the search's first population.

All work on any block layout: components are matched by name in every group that has them, and step 0
always computes.
- FORA every-N: every component computes at steps 0, N, 2N, ... and is reused in between.
- TGATE-like: cross-attention computes until a gate step and is reused afterwards; self-attention is
  recomputed every k steps after the gate; feed-forward always computes.
- Evenly spaced: one component type computes every N steps; the others always compute.
- SA+CA every N: both attentions compute every N steps; feed-forward always computes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .schedule import BlockGroup, CacheSchedule, ScheduleError

SELF_ATTENTION = ("attn1", "attn")
CROSS_ATTENTION = ("attn2",)


def _every(num_steps: int, n: int) -> np.ndarray:
    if n < 1:
        raise ScheduleError(f"the interval must be at least 1, got {n}")
    return np.arange(num_steps) % n == 0


def _build(
    groups: tuple[BlockGroup, ...], num_steps: int, rule: dict[str, np.ndarray], name: str, **details: object
) -> CacheSchedule:
    """A schedule whose component `c` follows the per-step rule `rule[c]` (others always compute)."""
    masks = {}
    for group in groups:
        mask = np.ones((num_steps, group.num_blocks, len(group.components)), dtype=bool)
        for c, component in enumerate(group.components):
            if component in rule:
                mask[:, :, c] = rule[component][:, None]
        masks[group.name] = mask
    return CacheSchedule(
        groups=groups, masks=masks, name=name, provenance={"method": "heuristic", "heuristic": details}
    )


def _components(groups: tuple[BlockGroup, ...]) -> list[str]:
    return list(dict.fromkeys(c for g in groups for c in g.components))


def _require(groups: tuple[BlockGroup, ...], names: Iterable[str], what: str) -> str:
    present = _components(groups)
    found = next((n for n in names if n in present), None)
    if found is None:
        raise ScheduleError(f"{what} needs a component named {' or '.join(names)}; this model has {present}")
    return found


def no_cache(groups: tuple[BlockGroup, ...], num_steps: int) -> CacheSchedule:
    return _build(groups, num_steps, {}, "no-cache", kind="no-cache")


def fora(groups: tuple[BlockGroup, ...], num_steps: int, n: int) -> CacheSchedule:
    steps = _every(num_steps, n)
    return _build(groups, num_steps, dict.fromkeys(_components(groups), steps), f"fora-{n}", kind="fora", n=n)


def tgate(
    groups: tuple[BlockGroup, ...], num_steps: int, gate_step: int, self_attention_every: int = 1
) -> CacheSchedule:
    cross = _require(groups, CROSS_ATTENTION, "TGATE")
    self_attn = _require(groups, SELF_ATTENTION, "TGATE")
    if not 1 <= gate_step <= num_steps:
        raise ScheduleError(f"gate step must be between 1 and {num_steps}, got {gate_step}")
    steps = np.arange(num_steps)
    rule = {
        cross: steps < gate_step,
        self_attn: (steps < gate_step) | ((steps - gate_step) % self_attention_every == 0),
    }
    name = f"tgate-{gate_step}-sa{self_attention_every}"
    return _build(groups, num_steps, rule, name, kind="tgate", gate_step=gate_step, k=self_attention_every)


def evenly_spaced(groups: tuple[BlockGroup, ...], num_steps: int, component: str, n: int) -> CacheSchedule:
    _require(groups, (component,), "evenly spaced caching")
    rule = {component: _every(num_steps, n)}
    return _build(groups, num_steps, rule, f"even-{component}-{n}", kind="evenly-spaced", component=component, n=n)


def attention_every(groups: tuple[BlockGroup, ...], num_steps: int, n: int) -> CacheSchedule:
    steps = _every(num_steps, n)
    names = [_require(groups, SELF_ATTENTION, "SA+CA every N")]
    names += [c for c in CROSS_ATTENTION if c in _components(groups)]
    return _build(groups, num_steps, dict.fromkeys(names, steps), f"attn-every-{n}", kind="attention-every", n=n)


def all_heuristics(groups: tuple[BlockGroup, ...], num_steps: int) -> list[CacheSchedule]:
    """Every family over a spread of parameters, spanning compute fractions from about 5 % to 100 %."""
    intervals = range(2, max(3, num_steps // 2 + 1))
    schedules = [no_cache(groups, num_steps)]
    schedules += [fora(groups, num_steps, n) for n in range(2, num_steps + 1)]
    schedules += [attention_every(groups, num_steps, n) for n in intervals]
    for component in _components(groups):
        schedules += [evenly_spaced(groups, num_steps, component, n) for n in intervals]
    if any(c in _components(groups) for c in CROSS_ATTENTION):
        gates = sorted({max(1, num_steps * q // 4) for q in (1, 2, 3)})
        schedules += [tgate(groups, num_steps, gate, k) for gate in gates for k in (1, 2, 3)]
    unique: dict[str, CacheSchedule] = {}
    for schedule in schedules:
        unique.setdefault(schedule.digest(), schedule)
    return list(unique.values())


FAMILIES = {
    "no-cache": no_cache,
    "fora": fora,
    "tgate": tgate,
    "evenly-spaced": evenly_spaced,
    "attention-every": attention_every,
}
