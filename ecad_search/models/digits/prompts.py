"""What the digits model is asked for: a digit, named in a prompt, and its generation defaults. Light (no torch),
so the registry entry and the pipeline both import it."""

from __future__ import annotations

import re
from typing import Any

from ...text import shorten

NUM_DIGITS = 10
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25
DEFAULT_TEXT_TOKENS = 4
# One resolution, so PixArt's resolution / aspect-ratio micro-conditions are off.
NO_MICRO_CONDITIONS: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
DIGIT_PROMPTS = [f"a handwritten digit {digit}" for digit in range(NUM_DIGITS)]

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_PATTERN = re.compile(r"(?<![0-9a-z])(" + "|".join(_NUMBER_WORDS) + r"|[0-9])(?![0-9a-z])")
_PROMPT_EXAMPLE = '"a handwritten digit 7" or "seven"'


def parse_digit_prompt(prompt: str) -> int:
    """The digit a prompt names, as a figure or a number word anywhere in the sentence (case-insensitive).

    A prompt naming no digit, or two different ones, is refused rather than guessed, so a typo in a
    calibration file fails loudly instead of silently training a schedule on the wrong class.
    """
    found = {_digit_value(match) for match in _DIGIT_PATTERN.findall(prompt.lower())}
    if not found:
        raise ValueError(f"prompt {shorten(prompt)} names no digit; write one digit 0-9, e.g. {_PROMPT_EXAMPLE}")
    if len(found) > 1:
        names = ", ".join(str(digit) for digit in sorted(found))
        raise ValueError(f"prompt {shorten(prompt)} names several digits ({names}); name one, e.g. {_PROMPT_EXAMPLE}")
    return found.pop()


def _digit_value(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS.index(token)
