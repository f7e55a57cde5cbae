"""Errors that name what the caller gave, in the caller's own terms.

Library code names a request's fields in backquotes (`population`); the command line shows the same message
with the flag that sets the field (`--population`), so a Python caller is never told about flags it did not
pass, and a person at a terminal is never told about field names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD = re.compile(r"`([a-z][a-z0-9_]*)`")


class FieldError(ValueError):
    """A value that cannot work; the message names the field(s) in backquotes, the value and what works."""


def name_fields(message: str, name: Callable[[str], str | None]) -> str:
    """The message with each backquoted field replaced by `name(field)` (kept as it is where that is None)."""
    return _FIELD.sub(lambda match: name(match.group(1)) or match.group(0), message)
