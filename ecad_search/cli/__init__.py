"""The `ecad-search` command line: thin typer commands, one module per group, over the service layer
(`ecad_search.app`). Commands turn flags into typed requests, and the requests' field errors back into flags.
"""

from . import compare, generate, jobs, runs, schedules, search
from .common import app, main

__all__ = ["app", "compare", "generate", "jobs", "main", "runs", "schedules", "search"]
