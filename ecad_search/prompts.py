"""Calibration prompt sets: the bundled ones in `calibration_prompts/`, or the user's own file.

A `.txt` file has one prompt per line; `.json` holds a list of strings, a list of objects with a `prompt`
key, or `{"prompts": [...]}`; `.csv` has a `prompt` column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .files import read_text

_PACKAGE = Path(__file__).resolve().parent
# Inside the package once installed from a wheel; the repository's top-level folder in a source checkout.
BUNDLED = next(
    (p for p in (_PACKAGE / "calibration_prompts", _PACKAGE.parent / "calibration_prompts") if p.is_dir()),
    _PACKAGE.parent / "calibration_prompts",
)


class PromptsError(ValueError):
    """A prompt file that cannot be read or holds no prompts."""


def default_prompt_file(model_family: str) -> Path:
    return BUNDLED / ("digits.txt" if model_family == "digits" else "general.txt")


def held_out_prompt_file(prompt_file: str | Path) -> Path | None:
    """The held-out companion a bundled prompt set ships with (`general.txt` → `general-heldout.txt`), if any."""
    path = Path(prompt_file)
    companion = path.with_name(f"{path.stem}-heldout{path.suffix}")
    return companion if companion.is_file() else None


def load_prompts(path: str | Path) -> tuple[str, ...]:
    path = Path(path)
    text = read_text(path, "prompts file", "a .txt, .json or .csv file saved as UTF-8", PromptsError)
    suffix = path.suffix.lower()
    if suffix == ".json":
        prompts = _from_json(text, path)
    elif suffix == ".csv":
        prompts = _from_csv(text, path)
    else:
        prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in (str(p).strip() for p in prompts) if p]
    if not prompts:
        raise PromptsError(f"prompts file {path} holds no prompts; put one prompt per line")
    return tuple(prompts)


def _from_json(text: str, path: Path) -> list[str]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptsError(f"prompts file {path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, dict):
        data = data.get("prompts")
    if not isinstance(data, list):
        raise PromptsError(f'prompts file {path}: expected a list of prompts or {{"prompts": [...]}}')
    return [item["prompt"] if isinstance(item, dict) and "prompt" in item else item for item in data]


def _from_csv(text: str, path: Path) -> list[str]:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "prompt" not in rows[0]:
        raise PromptsError(f"prompts file {path}: CSV needs a 'prompt' column")
    return [row["prompt"] for row in rows]
