"""Policy files: an online policy and its knobs as a small versioned JSON document, so a policy setting is as
shareable as a schedule (`ecad-search generate --policy FILE.json`)::

    {"format": "ecad-search.policy", "version": 1, "policy": "teacache", "knobs": {"threshold": 0.3, ...}}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..files import read_text, write_atomic
from ..policies import PolicyConfig, PolicyError, policy_config

FORMAT = "ecad-search.policy"
VERSION = 1


def policy_document(config: PolicyConfig) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "policy": config.name, "knobs": config.knobs()}


def policy_text(config: PolicyConfig) -> str:
    """The policy document in canonical form (sorted keys, no spaces): what the store keeps for a policy."""
    return json.dumps(policy_document(config), sort_keys=True, separators=(",", ":"))


def policy_digest(config: PolicyConfig) -> str:
    """The policy's identity in the store, as a mask's digest is the mask's: equal knobs, equal digest."""
    return hashlib.sha256(policy_text(config).encode()).hexdigest()


def save_policy(config: PolicyConfig, path: str | Path) -> Path:
    return write_atomic(path, json.dumps(policy_document(config), indent=1) + "\n")


def load_policy(path: str | Path) -> PolicyConfig:
    """A policy file back as its config; any problem is a one-line `PolicyError`."""
    path = Path(path)
    return policy_from_text(read_text(path, "policy file", "an ecad-search policy JSON file", PolicyError), path)


def policy_from_text(text: str, path: str | Path = "the policy document") -> PolicyConfig:
    """A policy document (a file's text, or `policy_text`) back as its config."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PolicyError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PolicyError(f'{path} is not an ecad-search policy file ("format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise PolicyError(f"{path} is policy format version {data.get('version')}; this ecad-search reads {VERSION}")
    knobs = data.get("knobs", {})
    if not isinstance(data.get("policy"), str) or not isinstance(knobs, dict):
        raise PolicyError(f'{path} needs "policy" (a name) and "knobs" (an object)')
    return policy_config(data["policy"], **knobs)
