"""SenCache (Haghighi & Alahi, CVPR 2026): reuse while a first-order bound on how much the denoiser's output
has moved since the last computed step stays under a tolerance.

Score at step i, against the last computed step (the reference): `Jx_ref·‖z_i − z_ref‖₂ + Jt_ref·|t_i − t_ref|`,
z the transformer's input latent and t the timestep in the units the transformer receives (FLUX: σ, i.e. t/1000;
PixArt and digits: 0–1000). `Jx`, `Jt` are the output's sensitivities to the latent and to the timestep, from an
offline table (`calibrate`) read at the entry nearest the reference's timestep and frozen while steps are
reused. Reuse iff score < ε·√numel(one sample's latent) (ε a root-mean-square tolerance on the predicted
output change) and fewer than `max_skips` steps in a row have been reused; ε is `eps_start` for the first
`start_fraction` of the steps, `eps_main` after. The first `forced_first` and last `forced_last` steps compute.

Batches: the reference decides on the conditional branch of one sample. Here a step is decided once per batch,
so the drift is each sample's own `‖z_b − z_ref,b‖₂` and the largest decides (every sample is held to the
tolerance). PixArt's batched guidance pair gives the transformer the same latent twice ([uncond, cond]), so
that is the conditional half's drift; a true-CFG pipeline's branch calls see the same latent and decide alike.

Defaults: the three sources disagree (Wan2.1-1.3B; CogVideoX and LTX differ again): the paper has
ε_start 0.01, ε_main 0.1 (slow) / 0.2 (fast), K 2 / 3; the code's argument defaults 0.005, 0.07, K 10; the
project page's demo videos 0.005, 0.13, K 3. Here the paper's slow setting (0.01, 0.1, K 2): it is the one with
published quality, and image runs take 20–30 steps rather than 50, so each reuse spans a wider timestep gap
and the conservative regime fits; K 10 is no limit at all at those step counts. First and last step forced
(the reference's CogVideoX convention; its Wan script forces only the first call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Gate, KnobRange, Observation, PolicyConfig, PolicyError

if TYPE_CHECKING:
    import torch

Row = tuple[float, float, float]


@dataclass(frozen=True)
class SenCacheConfig(PolicyConfig):
    name = "sencache"
    eps_start: float = 0.01
    eps_main: float = 0.1
    max_skips: int = 2
    start_fraction: float = 0.2
    forced_first: int = 1
    forced_last: int = 1
    # (timestep, Jx, Jt) rows from `calibrate`; empty means not calibrated.
    table: tuple[Row, ...] = ()
    limits: ClassVar[dict[str, tuple[float, float]]] = {"start_fraction": (0.0, 1.0)}

    def __post_init__(self) -> None:
        # Calibration returns lists (JSON); the config keeps tuples so that it stays hashable.
        rows = tuple(tuple(float(value) for value in row) for row in self.table)
        if any(len(row) != 3 for row in rows):
            raise PolicyError("sencache's table rows are (timestep, Jx, Jt): run `ecad-search calibrate sencache`")
        object.__setattr__(self, "table", rows)
        super().__post_init__()

    @property
    def needs_calibration(self) -> bool:
        return not self.table

    def gate(self) -> Gate:
        if self.needs_calibration:
            raise PolicyError("sencache has no sensitivity table: run `ecad-search calibrate sencache --model M`")
        return SenCacheGate(self)


def sensitivity_score(jx: float, jt: float, drift: float, dt: float) -> float:
    """The first-order bound on the output's change: `Jx·‖Δz‖ + Jt·|Δt|`."""
    return jx * drift + jt * abs(dt)


def nearest_row(table: tuple[Row, ...], timestep: float) -> Row:
    """The table entry whose timestep is nearest (the first of equally near ones)."""
    return min(table, key=lambda row: abs(row[0] - timestep))


def timestep_value(timestep: torch.Tensor | float) -> float:
    """The step's timestep as a number (every sample of a call shares it)."""
    import torch

    return float(torch.as_tensor(timestep).flatten()[0])


@dataclass
class Reference:
    """The last computed step: its latent and timestep, and the sensitivities read there."""

    latent: torch.Tensor
    timestep: float
    jx: float
    jt: float


class SenCacheGate(Gate):
    def __init__(self, config: SenCacheConfig) -> None:
        self.config = config
        self.reference: Reference | None = None
        self.skips = 0

    def decide(self, seen: Observation) -> bool:
        # The drift: a difference, a square and a sum per element of the latent.
        self.overhead_macs += 3 * seen.latent.numel()
        return self.rule(seen.step, seen.num_steps, seen.latent, timestep_value(seen.timestep))

    def tolerance(self, step: int, num_steps: int, latent: torch.Tensor) -> float:
        """ε for this step, scaled by √numel of one sample's latent."""
        eps = self.config.eps_start if step < self.config.start_fraction * num_steps else self.config.eps_main
        return eps * math.sqrt(latent[0].numel())

    def rule(self, step: int, num_steps: int, latent: torch.Tensor, timestep: float) -> bool:
        """The decision on this step's latent (batch first) and timestep."""
        c, ref = self.config, self.reference
        if ref is not None and c.forced_first <= step < num_steps - c.forced_last and self.skips < c.max_skips:
            drift = float((latent - ref.latent).float().flatten(1).norm(dim=1).max())
            score = sensitivity_score(ref.jx, ref.jt, drift, timestep - ref.timestep)
            if score < self.tolerance(step, num_steps, latent):
                self.skips += 1
                return False
        self.skips = 0
        _, jx, jt = nearest_row(c.table, timestep)
        self.overhead_macs += len(c.table)
        self.reference = Reference(latent.detach().clone(), timestep, jx, jt)
        return True


def _output_of(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result.sample


def _latent_of(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _timestep_of(args: tuple, kwargs: dict[str, Any]) -> float:
    return timestep_value(kwargs["timestep"] if "timestep" in kwargs else args[2])


def _replaced(
    args: tuple, kwargs: dict[str, Any], *, latent: torch.Tensor | None = None, timestep: float | None = None
) -> tuple[tuple, dict[str, Any]]:
    """A recorded call's arguments with the latent or the timestep replaced (keyword or positional, as
    diffusers' transformers take `(hidden_states, encoder_hidden_states, timestep, ...)`)."""
    import torch

    positional, named = list(args), dict(kwargs)
    if latent is not None:
        if positional:
            positional[0] = latent
        else:
            named["hidden_states"] = latent
    if timestep is not None:
        if "timestep" in named:
            named["timestep"] = torch.full_like(torch.as_tensor(named["timestep"]), timestep)
        else:
            positional[2] = torch.full_like(torch.as_tensor(positional[2]), timestep)
    return tuple(positional), named


def _sample_norms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float().flatten(1).norm(dim=1)


def calibrate(pipe: Any, prompts: list[str], run: Callable[[list[str]], object], steps: int) -> dict[str, Any]:
    """The sensitivity table for this pipeline at these settings (same scheduler and step count as deployment):
    the reference's finite differences (§3.2) on the uncached trajectory of these prompts.

    One uncached run records each transformer call's arguments and output `f_i`; x_i is the latent the
    trajectory gives the transformer at step i (not the reference's fresh-noise `(1−σ)x0 + σε`, which needs
    clean latents and a forward process per scheduler; the trajectory is generic and deterministic). Then per
    step two more calls: `Jx = ‖f(x_{i+1}, t_i) − f_i‖ / ‖x_{i+1} − x_i‖` (moved along the solver's own step,
    the next call's latent; the last step reuses the previous step's direction) and
    `Jt = ‖f(x_i, t_{i+1}) − f_i‖ / |t_{i+1} − t_i|` (t after the last step = 0). Norms are per sample and
    averaged over the prompts; with batched guidance ([uncond, cond], twice the prompts) only the conditional
    half counts, as the reference calibrates the conditional branch. Returns `{"table": [[t, Jx, Jt], ...]}`.
    """
    import torch

    from ..runtime.apply import transformer_of

    transformer = transformer_of(pipe)
    calls: list[tuple[tuple, dict[str, Any], torch.Tensor]] = []

    def record(module: Any, args: tuple, kwargs: dict[str, Any], result: Any) -> None:
        calls.append((*_replaced(args, kwargs, latent=_latent_of(args, kwargs).clone()), _output_of(result)))

    handle = transformer.register_forward_hook(record, with_kwargs=True)
    try:
        run(prompts)
    finally:
        handle.remove()
    if not calls or len(calls) % steps:
        raise PolicyError(f"sencache calibration saw {len(calls)} transformer calls for {steps} steps")
    # A true-CFG pipeline calls the transformer once per branch and step, the conditional branch first.
    calls = calls[:: len(calls) // steps]
    latents = [_latent_of(args, kwargs) for args, kwargs, _ in calls]
    timesteps = [_timestep_of(args, kwargs) for args, kwargs, _ in calls]
    rows = []
    with torch.no_grad():
        for i, (args, kwargs, output) in enumerate(calls):
            latent, timestep = latents[i], timesteps[i]
            if i + 1 < len(calls):
                moved, later = latents[i + 1], timesteps[i + 1]
            else:
                moved, later = 2 * latent - latents[i - 1], 0.0
            samples = slice(len(prompts), None) if latent.shape[0] == 2 * len(prompts) else slice(None)
            positional, named = _replaced(args, kwargs, latent=moved)
            change_x = _sample_norms(_output_of(transformer(*positional, **named)) - output)[samples]
            positional, named = _replaced(args, kwargs, timestep=later)
            change_t = _sample_norms(_output_of(transformer(*positional, **named)) - output)[samples]
            jx = change_x / _sample_norms(moved - latent)[samples].clamp_min(1e-12)
            jt = change_t / max(abs(later - timestep), 1e-12)
            rows.append([timestep, float(jx.mean()), float(jt.mean())])
    return {"table": rows}


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"eps_main": KnobRange(0.05, 2.0, log=True), "max_skips": KnobRange(1, 6, integer=True)}
CONFIG = SenCacheConfig
