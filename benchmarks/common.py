"""What the benchmarks share: their command line, their JSON output, and a search request on a fresh
database (so no measured search profits from another's memo)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.files import write_atomic
from ecad_search.search.prepared import PreparedSearch


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A bench's command line, its module docstring (what it measures, how to run it) as the help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def write_json(path: Path, data: Any) -> Path:
    """The figures as indented JSON, written whole or not at all (a bench cut short keeps the last write)."""
    return write_atomic(path, json.dumps(data, indent=1) + "\n")


def fresh_search(folder: Path, name: str, **fields: Any) -> PreparedSearch:
    """A checked search request on its own SQLite database `folder/name.db`, writing under `folder/out`."""
    request = SearchRequest(**{"generations": 1, **fields}, db=f"sqlite:///{folder / name}.db", out=str(folder / "out"))
    return prepare(request)
