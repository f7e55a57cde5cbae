"""How values read in one-line messages and tables: long user text shortened, MAC counts in fitting units."""

from __future__ import annotations

_UNITS = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def shorten(text: str, limit: int = 60) -> str:
    """User text quoted for a one-line message: cut at `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def macs_text(macs: float, digits: int = 4) -> str:
    """MACs in the largest unit that keeps the number at least 1: '2.135 TMACs', '309.8 MMACs'."""
    for scale, prefix in _UNITS:
        if abs(macs) >= scale:
            return f"{macs / scale:.{digits}g} {prefix}MACs"
    return f"{macs:.{digits}g} MACs"
