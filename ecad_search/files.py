"""Where files go and how they are written: atomically (under a temporary name, renamed when complete, so a
reader or a crash never sees half a file; the temporary name carries the process id, so two processes writing
the same file never mix their bytes), and the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def user_cache_dir() -> Path:
    """Where ecad-search keeps what it can recompute (cost tables, calibrations): `ECAD_SEARCH_CACHE`, else
    the XDG cache folder. Never inside the installed package."""
    if os.environ.get("ECAD_SEARCH_CACHE"):
        return Path(os.environ["ECAD_SEARCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ecad-search"


def read_text(path: Path, what: str, expected: str, error: type[Exception]) -> str:
    """A UTF-8 text file the user named; an unreadable or binary file raises `error` with one line naming it
    (`what`: "prompts file"; `expected`: what to give instead)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            f"give {expected}"
        ) from None


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    return path
