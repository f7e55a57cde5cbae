"""What every command shares: the typer app, the consoles, one-line errors (exit 2) that name flags, and the
entry point that turns Ctrl-C and SIGTERM into the shell's exit codes.

Every user error ends as one line on stderr naming the problem and the fix, with exit code 2, and nothing
half-written: outputs are written to a temporary name and renamed when complete. Light commands (`--help`,
`models`, `runs`, `describe`, `heuristic`, `convert`) import neither torch nor diffusers at start: each
command imports what it uses.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import name_fields
from ..metrics import MetricNotAvailableError
from ..models import ModelNotAvailableError, get_family, get_model
from ..schedule import ScheduleError

if TYPE_CHECKING:
    from ..models.base import ModelSpec
    from ..schedule import CacheSchedule

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Learned cache schedules for diffusion transformers (PixArt-α/Σ, FLUX.1, any diffusers DiT).",
)
# Not a terminal (a pipe, a file, a CI log): never hard-wrap a line, so no number is split across two.
console = Console(soft_wrap=not sys.stdout.isatty())
errors = Console(stderr=True, soft_wrap=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="registry name or diffusers pipeline folder")]

# Exit codes of a run stopped by a signal, as shells report them (128 + signal number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, batch schedulers and Ray), raised like Ctrl-C so every run records how it
    ended on the way out. Typer turns a KeyboardInterrupt into exit code 130, so the handler also notes the
    signal in `_received` for `main` to report it as SIGTERM."""


_received: set[int] = set()


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into a one-line message and exit code 2."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (
            UsageError,
            ScheduleError,
            ModelNotAvailableError,
            MetricNotAvailableError,
            ValueError,
            FileNotFoundError,
        ) as err:
            _error(name_fields(str(err), flag))
            raise typer.Exit(2) from None

    return run


# Request fields whose flag is not the field's name with dashes.
FLAGS = {"schedules": "--schedule", "knee_point": "--knee"}


def flag(field: str) -> str | None:
    """The flag that sets a request field (None for a name that is no parameter of any command): library
    errors name fields, a person at a terminal reads flags."""
    if field in FLAGS:
        return FLAGS[field]
    return "--" + field.replace("_", "-") if field in _parameters() else None


def _parameters() -> set[str]:
    """The names of every command's parameters."""
    root = typer.main.get_command(app)
    commands = [root, *getattr(root, "commands", {}).values()]
    return {param.name for command in commands for param in command.params if param.name}


def _error(message: str) -> None:
    errors.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, markup=True)


def margin_pairs(given: list[str]) -> tuple[tuple[str, float], ...]:
    """`--margin FAMILY=VALUE` options as (family, value) pairs; the families are checked by the request."""
    pairs = []
    for text in given:
        family, _, value = text.partition("=")
        try:
            pairs.append((family.strip(), float(value)))
        except ValueError:
            raise UsageError(f"--margin {text}: write FAMILY=VALUE, e.g. --margin fidelity=1") from None
    return tuple(pairs)


def spec_at(model: str, resolution: int | None = None) -> ModelSpec:
    """The model, at another of its resolutions when asked (PixArt has one checkpoint per size)."""
    spec = get_model(model)
    if resolution is None or resolution == spec.resolution:
        return spec
    get_family(spec).check_resolution(spec, resolution)
    if spec.family == "pixart" and spec.transformer_id:
        from ..models.pixart import at_resolution

        return at_resolution(spec, resolution)
    return spec


def metadata_of(spec: ModelSpec) -> dict[str, Any]:
    from ..models import schedule_metadata

    return schedule_metadata(spec)


def with_macs(schedule: CacheSchedule, spec: ModelSpec) -> CacheSchedule:
    from ..cost import estimate_macs

    macs = estimate_macs(schedule, spec)
    figure = {
        "value": macs,
        "unit": "MAC",
        "definition": "transformer MACs of one generation (linear layers + attention matmuls), "
        f"{spec.transformer_rows(schedule.guidance_scale)} row(s) per image, at the schedule's resolution",
    }
    return schedule.with_metadata(metrics={**schedule.metrics, "macs": figure})


def viewable(image: Any) -> Any:
    """Small images (the digits model makes 8×8) are upscaled so a person can see them."""
    from PIL import Image

    factor = max(1, 256 // max(image.size))
    return image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST) if factor > 1 else image


def png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    errors.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


# What each extra installs that its commands import first: a core install answers them in one line.
EXTRAS = {
    "search": ("pymoo", "sqlalchemy", "alembic", "scipy", "sklearn", "torchmetrics", "matplotlib"),
    "compare": ("optuna",),
}


def needs(*extras: str) -> None:
    """Refuse, in one line that says what to install, a command whose extras are not installed."""
    missing = [extra for extra in extras if any(importlib.util.find_spec(module) is None for module in EXTRAS[extra])]
    if missing:
        names = ",".join(missing)
        raise UsageError(f"this command needs the {names} extra, not installed: pip install 'ecad-search[{names}]'")


def quiet_libraries() -> None:
    """The libraries' deprecation chatter is not the user's business; called by the commands that load them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|diffusers|transformers|torch)(\.|$)")


def _terminate(signum: int, frame: Any) -> None:
    _received.add(signum)
    raise Terminated()


def main(args: list[str] | None = None) -> None:
    """Run the command; usage errors are one line, and Ctrl-C or SIGTERM end it with the shell's exit code."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    click = _click_exceptions()
    try:
        code = command.main(args=args, prog_name="ecad-search", standalone_mode=False)
    except click.NoArgsIsHelpError as err:
        console.print(err.ctx.get_help())
        code = 0
    except click.ClickException as err:
        context = getattr(err, "ctx", None)
        where = context.command_path.replace(context.find_root().info_name, "ecad-search", 1) if context else ""
        _error(f"{err.format_message()} (see `{where or 'ecad-search'} --help`)")
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    if signal.SIGTERM in _received:
        _error("terminated (SIGTERM)")
        code = EXIT_TERMINATED
    elif code == EXIT_INTERRUPTED:
        _error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> Any:
    """Click's exceptions as typer raises them: typer ≥ 0.20 vendors click as `typer._click`."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions
