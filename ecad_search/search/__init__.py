"""The search: NSGA-II (pymoo, ask/tell) over cache masks, persisted and resumable.

The names below are imported on first use: the runner pulls in torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchConfig": "config",
    "SearchOptionError": "config",
    "prepare": "runner",
    "run_search": "runner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
