"""The README as a new user reads it: short, every command in it a real command with real flags, and the
light ones run as written (on a small search's database where they need a run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.testing import FULL_DEPTH_TINY_PIXART, TINY_PIXART_CALL_KWARGS, tiny_pixart_pipeline

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()
# Commands of the README light enough to run in a test: they read a database or a schedule, or make one image.
LIGHT = ("runs", "export", "describe", "generate", "heuristic", "policies", "models", "convert", "grid")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def commands() -> list[list[str]]:
    """Every `ecad-search` command of the README's shell blocks; a cheat-sheet line's alternatives (`a | b`)
    are commands of their own, or more options of the first one's command where they start with a flag."""
    found = []
    for block in blocks("bash"):
        for line in block.splitlines():
            first, *alternatives = re.split(r"\s+\|\s+", line.split("  #")[0].strip())
            words = first.split("&&")[-1].split()
            if not words or words[0] != "ecad-search":
                continue
            found.append(words[1:])
            command = words[1:2] if len(words) > 1 and not words[1].startswith("-") else []
            found += [[*command, *alt.split()] if alt.startswith("-") else alt.split() for alt in alternatives]
    return found


def options_of(name: str | None) -> set[str]:
    root = typer.main.get_command(app)
    command = root if name is None else root.commands[name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_readme_is_short_and_its_commands_exist() -> None:
    assert len(README.read_text().splitlines()) <= 150
    found = commands()
    assert len(found) >= 15, found
    subcommands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for words in found:
        name = None if not words or words[0].startswith("-") else words[0]
        assert name is None or name in subcommands, words
        # After `--`, a submitted job's own options: the search's.
        own, passed = (words[: words.index("--")], words[words.index("--") + 1 :]) if "--" in words else (words, [])
        for command, given in ((name, own), (None, passed)):
            flags = {word.strip("[]").split("=")[0] for word in given if word.strip("[").startswith("--")}
            assert flags <= options_of(command), (words, flags - options_of(command))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `ecad-search.db` with one finished run, RUN, of a small search on digits."""
    folder = tmp_path_factory.mktemp("readme")
    args = ["--model", "digits", "--generations", "1", "--metric", "fidelity", "--population", "8",
            "--images-per-prompt", "1", "--held-out-images-per-prompt", "1", "--run", "RUN", "--prefix-memory", "0",
            "--db", f"sqlite:///{folder / 'ecad-search.db'}", "--out", str(folder / "runs")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder


def test_the_light_commands_run_as_written(searched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(searched)
    ran = []
    for words in commands():
        placeholders = [w for w in words[1:] if re.fullmatch(r"[A-Z]+|\[.*|.*\]", w) and w != "RUN"]
        if not words or words[0] not in LIGHT or placeholders:
            continue
        result = runner.invoke(app, words)
        assert result.exit_code == 0, (words, result.output)
        ran.append(words[0])
    assert {"runs", "export", "describe", "generate", "heuristic", "policies", "grid"} <= set(ran), ran
    assert (searched / "fast.json").is_file() and (searched / "fast.png").is_file()


class Pipeline:
    """A tiny stock PixArt-α pipeline of PixArt-α's depth that a README call (prompt and steps only) can run."""

    def __init__(self) -> None:
        self.pipe = tiny_pixart_pipeline(**FULL_DEPTH_TINY_PIXART)
        self.pipe.set_progress_bar_config(disable=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def __call__(self, prompt: str, **kwargs: Any) -> Any:
        return self.pipe(prompt, output_type="pt", **TINY_PIXART_CALL_KWARGS, **kwargs)


def test_the_python_example_runs_on_a_stock_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    [example] = blocks("python")
    scope: dict[str, Any] = {"pipe": Pipeline()}
    exec(compile(example, str(README), "exec"), scope)
    assert scope["schedule"].name == "fora-3" and tuple(scope["image"].shape) == (3, 16, 16)
    assert capsys.readouterr().out.strip() == "2.10624380928 TMACs", "PixArt-α 256 px FORA-3, analytic"


def test_the_quick_start_names_the_extras_it_needs() -> None:
    first, tests = (line for line in blocks("bash")[0].splitlines() if line.strip())
    assert shlex.split(first)[:3] == ["pip", "install", "-e"] and "[search]" in first
    assert shlex.split(tests)[-2:] == ["pytest", "-q"] and "[dev]" in tests


def test_every_link_of_the_readme_and_the_docs_resolves() -> None:
    documents = [README, *sorted((README.parent / "docs").rglob("*.md"))]
    broken = []
    for document in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if not target.startswith("http") and not (document.parent / target).exists():
                broken.append(f"{document.name} -> {target}")
    assert len(documents) > 10 and not broken
