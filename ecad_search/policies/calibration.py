"""Calibration tables of the policies that need one (TeaCache's polynomial, MagCache's ratios, SenCache's
sensitivities): measured once per model, step count, resolution and guidance on uncached runs of the
model's calibration prompts, kept as JSON in a calibration folder, and reused by every later call with the
same settings.

The folder is `<user cache>/calibration` (`ECAD_SEARCH_CACHE`, else the XDG cache folder), never inside the
installed package. A policy module that can be calibrated has a module-level
`calibrate(pipe, spec, prompts, settings) -> knobs`; its config's `needs_calibration` says when its table is
missing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import user_cache_dir, write_atomic
from ..generation import GenerationSettings, generate
from ..models import ModelSpec
from ..prompts import default_prompt_file, load_prompts
from .base import PolicyConfig, PolicyError, policy_config, policy_module, policy_names

FORMAT = "ecad-search-calibration"
VERSION = 1
# Calibration runs use this many of the model's calibration prompts: enough for a stable mean, few enough
# to take seconds on the bundled models.
CALIBRATION_PROMPTS = 8


def calibration_dir() -> Path:
    return user_cache_dir() / "calibration"


def calibratable() -> list[str]:
    """The policies with a calibration step."""
    return [name for name in policy_names() if hasattr(policy_module(name), "calibrate")]


@dataclass(frozen=True)
class CalibrationKey:
    """What a calibration depends on: the policy, the model, and how the model is run."""

    policy: str
    model: str
    steps: int
    resolution: int
    guidance_scale: float

    @classmethod
    def of(cls, policy: str, spec: ModelSpec, settings: GenerationSettings) -> CalibrationKey:
        return cls(policy, spec.name, settings.steps, settings.height, settings.guidance_scale)

    def filename(self) -> str:
        """Readable, and unique for model paths too (a short hash of the full key)."""
        model = re.sub(r"[^A-Za-z0-9.-]+", "_", Path(self.model).name or self.model)
        digest = hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.policy}-{model}-{self.steps}steps-{self.resolution}px-{digest}.json"


@dataclass(frozen=True)
class Calibration:
    """A stored calibration: the knobs it sets, and whether this call measured them or read them back."""

    path: Path
    knobs: dict[str, Any]
    measured: bool


def calibrate(
    policy: str,
    pipe: Any,
    spec: ModelSpec,
    settings: GenerationSettings,
    *,
    folder: Path | None = None,
    prompts: list[str] | None = None,
    refresh: bool = False,
) -> Calibration:
    """The policy's calibrated knobs for this model and settings: read from the folder when a calibration with
    the same key is there (unless `refresh`), else measured on the model's calibration prompts and stored."""
    module = policy_module(policy)
    if not hasattr(module, "calibrate"):
        raise PolicyError(f"policy '{policy}' needs no calibration: calibrate one of {', '.join(calibratable())}")
    key = CalibrationKey.of(policy, spec, settings)
    path = (folder or calibration_dir()) / key.filename()
    stored = None if refresh else _read(path, key)
    if stored is not None:
        return Calibration(path, stored, measured=False)
    used = prompts or list(load_prompts(default_prompt_file(spec.family))[:CALIBRATION_PROMPTS])
    run = lambda batch: generate(pipe, spec, batch, settings, output_type="pt")  # noqa: E731
    knobs = module.calibrate(pipe, used, run, settings.steps)
    policy_config(policy, **knobs)  # the knobs must make a valid config before they are stored
    document = {"format": FORMAT, "version": VERSION, "key": key.__dict__, "prompts": used, "knobs": knobs}
    write_atomic(path, json.dumps(document, indent=1) + "\n")
    return Calibration(path, knobs, measured=True)


def _read(path: Path, key: CalibrationKey) -> dict[str, Any] | None:
    """The stored knobs when the file is a calibration for exactly this key; anything else is measured anew."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("key") != key.__dict__:
        return None
    knobs = document.get("knobs")
    return knobs if isinstance(knobs, dict) else None


def calibrated(
    config: PolicyConfig, pipe: Any, spec: ModelSpec, settings: GenerationSettings, folder: Path | None = None
) -> PolicyConfig:
    """`config` with its calibration table filled in when it needs one (measured once, then reused)."""
    if not getattr(config, "needs_calibration", False):
        return config
    table = calibrate(config.name, pipe, spec, settings, folder=folder)
    return policy_config(config.name, **{**config.knobs(), **table.knobs})
