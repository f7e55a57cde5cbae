"""The package's rules, checked on its source: no import cycle, no file over 400 lines, no flag named or
anything printed by the library layers, and a core install that runs schedules and policies without the
search's dependencies."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from ecad_search.cli import app

PACKAGE = Path(__file__).resolve().parents[2] / "ecad_search"
# What the extras install: a core install has none of it.
EXTRAS = ("pymoo", "sqlalchemy", "alembic", "optuna", "ray", "matplotlib", "mpl_toolkits", "scipy", "sklearn",
          "torchmetrics", "psycopg", "psycopg_binary")  # fmt: skip
# The layers that raise errors naming fields and emit events, never flags or output.
LIBRARY_LAYERS = ("search", "compare", "pool")
MAX_LINES = 400


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ecad_search module `name` imports, at any depth of its code (type-checking and lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            prefix = ".".join([*base, node.module] if node.module else base)
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                return [*stack[stack.index(following) :], following]
            if following not in state and (found := visit(following)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    paths = dict(modules())
    graph = {name: imports_of(name, path, set(paths)) for name, path in paths.items()}
    assert sum(len(edges) for edges in graph.values()) > 300, "the walk finds the package's imports"
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"], "and it would see one"


def test_no_file_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for _, path in modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long


def flags() -> set[str]:
    root = typer.main.get_command(app)
    commands = [root, *getattr(root, "commands", {}).values()]
    return {opt for command in commands for param in command.params for opt in param.opts if opt.startswith("--")}


def test_library_layers_name_no_flag_and_print_nothing() -> None:
    """search/, compare/ and pool/ name request fields, never the command line's flags, and leave printing to
    observers: no print(), no rich console."""
    ours = flags()
    assert {"--generations", "--budget-latency", "--held-out-images-per-prompt"} <= ours
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(ours, key=len, reverse=True))) + r")(?![\w-])")
    offenders = []
    for name, path in modules():
        if name.split(".")[1:2] and name.split(".")[1] in LIBRARY_LAYERS:
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.search(node.value):
                    offenders.append(f"{name}:{node.lineno}: {pattern.search(node.value).group(0)}")  # type: ignore[union-attr]
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{name}:{node.lineno}: print()")
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rich"):
                    offenders.append(f"{name}:{node.lineno}: imports {node.module}")
    assert not offenders


def core_site(tmp_path: Path) -> Path:
    """The installed packages as a core install has them: every entry of site-packages but the extras'."""
    site = Path(sysconfig.get_paths()["purelib"])
    core = tmp_path / "core-site"
    core.mkdir()
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0]
        if top not in EXTRAS and top not in ("scikit_learn", "ecad_search") and entry.suffix != ".pth":
            (core / entry.name).symlink_to(entry)
    return core


CORE_USE = """
import importlib.util, sys
from ecad_search import apply_policy, apply_schedule, estimate_macs, load_schedule, policy_config
from ecad_search.testing import FULL_DEPTH_TINY_PIXART, TINY_PIXART_CALL_KWARGS, tiny_pixart_pipeline
assert importlib.util.find_spec("pymoo") is None and importlib.util.find_spec("sqlalchemy") is None
pipe = tiny_pixart_pipeline(**FULL_DEPTH_TINY_PIXART)
pipe.set_progress_bar_config(disable=True)
schedule = load_schedule("pixart-alpha/fora-2")
calls = []
for block in pipe.transformer.transformer_blocks:
    block.attn1.to_q.register_forward_hook(lambda *_: calls.append(1))
with apply_schedule(pipe, schedule) as handle:
    pipe("a red fox", num_inference_steps=schedule.num_steps, output_type="pt", **TINY_PIXART_CALL_KWARGS)
scheduled = len(calls)
with apply_policy(pipe, policy_config("first-block-cache", threshold=10.0)) as policy:
    pipe("a red fox", num_inference_steps=8, output_type="pt", **TINY_PIXART_CALL_KWARGS)
print(scheduled, handle.stats.steps_run, sum(policy.decisions[-1]), round(estimate_macs(schedule) / 1e12, 3))
print(sorted(m for m in sys.modules if m.split(".")[0] in {extras!r}))
"""


def test_a_core_install_runs_schedules_and_policies_without_the_extras(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), str(core_site(tmp_path))])}
    script = CORE_USE.format(extras=set(EXTRAS))
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts, imported = result.stdout.strip().splitlines()[-2:]
    attention_calls, steps, policy_steps, tmacs = counts.split()
    # FORA-2 over 20 steps computes every other step from step 0: 10 steps of 28 blocks' self-attention.
    assert (int(attention_calls), int(steps)) == (10 * 28, 20)
    assert int(policy_steps) == 1, "a threshold above every distance reuses every step after the first"
    assert float(tmacs) == pytest.approx(2.996, abs=1e-3), "PixArt-α 256 px FORA-2: the analytic MACs"
    assert imported == "[]"


def test_a_core_install_generates_and_names_the_extra_a_search_needs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), str(core_site(tmp_path))])}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", "-m", "ecad_search", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
            timeout=300,
        )  # fmt: skip

    made = command("generate", "--model", "digits", "--prompt", "7", "--schedule", "digits/fora-2", "--out", "7.png")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "wrote 7.png (256x256)" in made.stdout and "49.9% of MACs saved" in made.stdout, made.stdout
    for args in (("--model", "digits", "--generations", "1"), ("runs",), ("compare",)):
        refused = command(*args)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
        assert "pip install 'ecad-search[search" in lines[0]
    assert not (tmp_path / "ecad-search.db").exists()
