"""The search: NSGA-II (pymoo, ask/tell) over cache masks, persisted and resumable."""

from .runner import SearchConfig, SearchOptionError, prepare, run_search

__all__ = ["SearchConfig", "SearchOptionError", "prepare", "run_search"]
