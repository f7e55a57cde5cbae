"""What a search leaves under `--out` after each generation: the current front as schedule files, a Pareto
plot with the FORA baselines marked, a CSV and markdown table, and the hypervolume history.

Each file is written to a temporary name and renamed, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..files import save_figure, write_atomic
from ..formats import save_schedule
from ..schedule import CacheSchedule
from ..store import EvaluationRecord

if TYPE_CHECKING:
    from .driver import GenerationReport
    from .runner import PreparedSearch


@dataclass(frozen=True)
class FrontEntry:
    """One schedule of the front with its figures, in the order written (cheapest first)."""

    schedule: CacheSchedule
    record: EvaluationRecord
    file: str


def write_front(out: Path, entries: list[FrontEntry]) -> None:
    """Replace `out/front/` with the current front's schedule files in one rename."""
    staging = out / ".front.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in entries:
        save_schedule(entry.schedule, staging / entry.file)
    final = out / "front"
    old = out / ".front.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def front_table(entries: list[FrontEntry], full_macs: float) -> tuple[str, str]:
    """The front as CSV and as a markdown table."""
    header = ["rank", "quality_loss", "tmacs", "macs_fraction", "predicted_speedup", "compute_fraction", "file"]
    rows = [
        [
            str(i),
            f"{e.record.quality_loss:.5f}",
            f"{e.record.macs / 1e12:.6f}",
            f"{e.record.macs / full_macs:.4f}",
            f"{full_macs / e.record.macs:.2f}",
            f"{e.schedule.compute_fraction:.4f}",
            e.file,
        ]
        for i, e in enumerate(entries)
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    markdown = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )
    return buffer.getvalue(), markdown + "\n"


def pareto_plot(
    path: Path,
    evaluated: list[EvaluationRecord],
    front: list[EvaluationRecord],
    baselines: dict[str, EvaluationRecord],
    full_macs: float,
    title: str,
) -> None:
    """Quality loss against MACs (fraction of uncached): all evaluations, the front, and FORA baselines.

    The loss axis is logarithmic above 1e-4 (linear below, so a zero loss still shows): the schedules worth
    comparing differ by a few percent of a small loss, invisible on a linear axis next to the cheapest ones.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(
        [r.macs / full_macs for r in evaluated], [r.quality_loss for r in evaluated], s=8, c="0.75", label="evaluated"
    )
    ordered = sorted(front, key=lambda r: r.macs)
    ax.step(
        [r.macs / full_macs for r in ordered],
        [r.quality_loss for r in ordered],
        where="post",
        c="tab:blue",
        marker="o",
        ms=4,
        label="front",
    )
    for name, record, offset, align in _label_places(baselines):
        ax.scatter(record.macs / full_macs, record.quality_loss, marker="x", c="tab:red", s=40)
        ax.annotate(
            name,
            (record.macs / full_macs, record.quality_loss),
            fontsize=7,
            xytext=offset,
            textcoords="offset points",
            ha=align,
        )
    ax.scatter([], [], marker="x", c="tab:red", label="FORA every-N")
    ax.set_xlabel("MACs (fraction of the uncached run)")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylabel("quality loss (lower is better; log above 1e-4)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _label_places(
    baselines: dict[str, EvaluationRecord],
) -> list[tuple[str, EvaluationRecord, tuple[float, float], str]]:
    """Where each baseline's label goes: baselines at the same MACs (FORA-5 and FORA-6 at 20 steps) take
    turns right-above, left-below, right-below, left-above of their point, so their labels never overlap."""
    places = [((4, 3), "left"), ((-4, -9), "right"), ((4, -9), "left"), ((-4, 3), "right")]
    by_macs: dict[float, list[tuple[str, EvaluationRecord]]] = {}
    for name, record in sorted(baselines.items(), key=lambda item: (item[1].macs, item[1].quality_loss)):
        by_macs.setdefault(round(record.macs, 6), []).append((name, record))
    return [
        (name, record, *places[k % len(places)]) for group in by_macs.values() for k, (name, record) in enumerate(group)
    ]


@dataclass(frozen=True)
class BaselineComparison:
    """A heuristic schedule against the best searched schedule on the front that costs no more MACs."""

    name: str
    baseline: EvaluationRecord
    rival: EvaluationRecord | None

    @property
    def beaten(self) -> bool:
        """The front has a schedule, other than the baselines themselves, at most as costly and strictly better."""
        return self.rival is not None and self.rival.quality_loss < self.baseline.quality_loss


def compare_with_baselines(
    front: list[EvaluationRecord], baselines: dict[str, EvaluationRecord]
) -> list[BaselineComparison]:
    """For each baseline, the front's best-quality schedule within its MACs (None if none is).

    The baselines seed the search and may sit on the front themselves; they never count as a rival, so FORA-5
    does not "beat" FORA-6 when both compute the same steps' worth of MACs.
    """
    own = {b.digest for b in baselines.values()}
    searched = [r for r in front if r.digest not in own]
    comparisons = []
    for name, baseline in sorted(baselines.items(), key=lambda item: -item[1].macs):
        affordable = [r for r in searched if r.macs <= baseline.macs]
        rival = min(affordable, key=lambda r: (r.quality_loss, r.macs)) if affordable else None
        comparisons.append(BaselineComparison(name, baseline, rival))
    return comparisons


def baseline_table(comparisons: list[BaselineComparison], full_macs: float) -> str:
    """Markdown: each baseline's loss and MACs beside the front's best schedule at no more MACs.

    "better by" is the rival's loss reduction relative to the baseline's, so that a win by a rounding-sized
    margin reads as the tie it is.
    """
    lines = [
        "| baseline | MACs | quality loss | front at <= MACs: loss | its MACs | better by | beaten |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        rival = c.rival
        rival_cells = "- | - | -"
        if rival:
            margin = 100 * (c.baseline.quality_loss - rival.quality_loss) / max(abs(c.baseline.quality_loss), 1e-12)
            rival_cells = f"{rival.quality_loss:.5f} | {rival.macs / full_macs:.3f} | {margin:.3g} %"
        lines.append(
            f"| {c.name} | {c.baseline.macs / full_macs:.3f} | {c.baseline.quality_loss:.5f} | {rival_cells} | "
            f"{'yes' if c.beaten else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(out: Path, entries: list[FrontEntry], full_macs: float) -> None:
    csv_text, markdown = front_table(entries, full_macs)
    write_atomic(out / "front.csv", csv_text)
    write_atomic(out / "front.md", markdown)


def write_history(out: Path, reports: list[GenerationReport]) -> None:
    """One row per generation with what it cost when it first ran (a resumed run keeps the original counts)."""
    lines = ["generation,hypervolume,evaluated,from_database,duplicates,front_size,wall_time_s"]
    lines += [
        f"{r.index},{r.hypervolume:.6f},{r.evaluated},{r.from_database},{r.duplicates},{r.front_size},"
        f"{r.wall_time_s:.2f}"
        for r in reports
    ]
    write_atomic(out / "history.csv", "\n".join(lines) + "\n")


def describe(
    schedule: CacheSchedule,
    record: EvaluationRecord,
    prepared: PreparedSearch,
    *,
    generation: int,
    rank: int,
    full_macs: float,
) -> CacheSchedule:
    """A front schedule with its figures (and what they mean) and where it came from, ready to save."""
    settings = prepared.settings
    quality = (
        f"1 - mean {settings.metric} score over {len(settings.prompts)} prompts x {settings.images_per_prompt} "
        f"image(s) (seeds {settings.seed}..{settings.seed + settings.images_per_prompt - 1}), "
        f"{settings.steps} steps, guidance {settings.guidance_scale}"
    )
    metrics = {
        "quality_loss": {"value": record.quality_loss, "unit": "", "definition": quality},
        "macs": {
            "value": record.macs,
            "unit": "MAC",
            "definition": "transformer MACs of one generation (linear layers + attention matmuls)",
        },
        "macs_fraction": {
            "value": record.macs / full_macs,
            "unit": "",
            "definition": "MACs relative to the uncached run",
        },
    }
    provenance = {
        "method": "search",
        "run": prepared.run,
        "generation": generation,
        "rank": rank,
        "preset": prepared.config.preset,
        "seed": prepared.config.seed,
        "evaluation_key": settings.key(),
    }
    return schedule.with_metadata(
        name=f"{prepared.run}/gen{generation:03d}/rank{rank:02d}",
        metrics=metrics,
        provenance=provenance,
        height=settings.resolution,
        width=settings.resolution,
        guidance_scale=settings.guidance_scale,
    )
