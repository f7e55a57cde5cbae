"""The `ecad-search` command line: thin typer commands, one module per group, over the service layer
(`ecad_search.app`). Commands turn flags into typed requests, and the requests' field errors back into flags.
"""

import importlib

from .common import app, main

# The command groups, in the order `--help` lists their commands: what a search leaves first, then schedules,
# images, comparisons and cluster jobs. Importing a group registers its commands.
GROUPS = ("search", "runs", "schedules", "generate", "compare", "jobs")
for _group in GROUPS:
    importlib.import_module(f".{_group}", __name__)

__all__ = ["GROUPS", "app", "main"]
