"""Atomic file writes: every output is written under a temporary name and renamed when complete, so a reader
(or a crash) never sees half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
    return path


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure as PNG, atomically (the temporary name keeps the suffix matplotlib reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    return path
