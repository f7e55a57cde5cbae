"""Is a model on this machine, and if not, can it be fetched? Answered in seconds, before any download.

`from_pretrained` on a machine without network retries each request with exponential back-off (half a
minute of warnings) before it gives up, and its error names neither the cause nor the fix. So a loader first
tries the local cache only; when that misses, it asks the Hub once, without retries, whether the repository
can be fetched, and turns the answer (offline, unreachable, gated, not found) into one line that ends with
the command that fixes it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

# Seconds to wait for the Hub when deciding whether a model can be fetched.
HUB_TIMEOUT_S = 4.0

_TRUE = {"1", "on", "yes", "true"}


class ModelNotAvailableError(RuntimeError):
    """The weights of a registered model are not on this machine and cannot be fetched."""


def hub_offline() -> bool:
    """The user (or CI) asked the Hub libraries never to touch the network."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch_commands(repos: Sequence[str]) -> str:
    return " and ".join(f"`hf download {repo}`" for repo in repos)


def require_fetchable(model: str, repos: Sequence[str]) -> None:
    """Raise `ModelNotAvailableError` unless every repository can be downloaded from the Hub right now.

    Called only after loading from the local cache failed, so the message says that the model is not here.
    """
    fix = (
        f"fetch it on a machine with network access with {fetch_commands(repos)}, or give a pipeline folder as `model`"
    )
    if hub_offline():
        raise ModelNotAvailableError(
            f"model '{model}' is not on this machine and HF_HUB_OFFLINE is set; {fix} (or unset HF_HUB_OFFLINE)"
        )
    endpoint = _endpoint()
    host = urlparse(endpoint).hostname or endpoint
    reason = _unreachable(host, urlparse(endpoint).port or (443 if endpoint.startswith("https") else 80))
    if reason:
        raise ModelNotAvailableError(
            f"model '{model}' is not on this machine and {host} is unreachable ({reason}); {fix}"
        )
    for repo in repos:
        _check_access(model, repo)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _unreachable(host: str, port: int) -> str | None:
    """Why the Hub cannot be reached (name resolution, refused, timed out), or None if a TCP connect works."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    except socket.gaierror as err:
        return f"cannot resolve the name: {err.strerror}"
    try:
        with socket.create_connection(address[:2], timeout=HUB_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot connect: {err.strerror or type(err).__name__}"


def _check_access(model: str, repo: str) -> None:
    """One metadata request, no retries: gated and missing repositories get their own fix."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        auth_check(repo)
    except GatedRepoError:
        raise ModelNotAvailableError(
            f"model '{model}' is gated on the Hub: accept its licence at https://huggingface.co/{repo}, "
            f"run `hf auth login`, then `hf download {repo}`"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotAvailableError(
            f"model '{model}': repository {repo} was not found on the Hub (or is private: run `hf auth login`)"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        reason = " ".join(str(err).split())[:160]
        raise ModelNotAvailableError(
            f"model '{model}': the Hub did not answer for {repo} ({reason}); "
            f"try again later, or {fetch_commands([repo])}"
        ) from None
