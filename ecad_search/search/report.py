"""What a search leaves under `--out` after each generation: the current front as schedule files, a Pareto
plot with the FORA baselines marked, a CSV and markdown table, the comparison with FORA, and the history.

The search's own loss (calibration, pooled with confirmation) chooses; held-out figures, once the run has
scored them, stand beside it everywhere, and every claim against a baseline is made on them alone.
Each file is written to a temporary name and renamed, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..files import save_figure, write_atomic
from ..formats import save_schedule
from ..schedule import CacheSchedule
from ..store import EvaluationRecord
from .stats import PairedDifference, paired_difference

if TYPE_CHECKING:
    from ..evaluation import EvaluationSettings
    from .driver import GenerationReport
    from .runner import PreparedSearch
    from .splits import Splits


@dataclass(frozen=True)
class ScoredRecord:
    """A schedule's calibration record, the loss the search decides by (pooled once confirmed), and its
    held-out record once scored."""

    record: EvaluationRecord
    loss: float
    held_out: EvaluationRecord | None = None

    @property
    def held_out_loss(self) -> float | None:
        return None if self.held_out is None else self.held_out.quality_loss


@dataclass(frozen=True)
class FrontEntry:
    """One schedule of the front with its figures, in the order written (cheapest first)."""

    schedule: CacheSchedule
    scored: ScoredRecord
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
    """The front as CSV and as a markdown table; `held_out_loss` is empty until the run has scored it."""
    header = [
        "rank",
        "quality_loss",
        "held_out_loss",
        "tmacs",
        "macs_fraction",
        "predicted_speedup",
        "compute_fraction",
        "file",
    ]
    rows = [
        [
            str(i),
            f"{e.scored.loss:.5f}",
            "" if e.scored.held_out_loss is None else f"{e.scored.held_out_loss:.5f}",
            f"{e.scored.record.macs / 1e12:.6f}",
            f"{e.scored.record.macs / full_macs:.4f}",
            f"{full_macs / e.scored.record.macs:.2f}",
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
    front: list[FrontEntry],
    baselines: dict[str, EvaluationRecord],
    held_out: dict[str, EvaluationRecord],
    full_macs: float,
    title: str,
    loss: Callable[[str], float] | None = None,
) -> None:
    """Quality loss against MACs (fraction of uncached): all evaluations, the front, FORA baselines, and the
    held-out losses of the front and of FORA once scored (a second, marked series). `loss` gives the search's
    loss of a baseline (pooled once confirmed), so FORA sits where the search saw it.

    The loss axis is logarithmic above 1e-4 (linear below, so a zero loss still shows): the schedules worth
    comparing differ by a few percent of a small loss, invisible on a linear axis next to the cheapest ones.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(
        [r.macs / full_macs for r in evaluated], [r.quality_loss for r in evaluated], s=8, c="0.75", label="evaluated"
    )
    ordered = sorted(front, key=lambda e: e.scored.record.macs)
    ax.step(
        [e.scored.record.macs / full_macs for e in ordered],
        [e.scored.loss for e in ordered],
        where="post",
        c="tab:blue",
        marker="o",
        ms=4,
        label="front (search loss)",
    )
    scored = [e for e in ordered if e.scored.held_out is not None]
    if scored:
        ax.scatter(
            [e.scored.record.macs / full_macs for e in scored],
            [e.scored.held_out_loss for e in scored],
            marker="D",
            s=14,
            facecolors="none",
            edgecolors="tab:orange",
            label="front, held out",
        )
    search_loss = loss or (lambda digest: {r.digest: r.quality_loss for r in baselines.values()}[digest])
    for name, record, offset, align in _label_places(baselines):
        ax.scatter(record.macs / full_macs, search_loss(record.digest), marker="x", c="tab:red", s=40)
        ax.annotate(
            name,
            (record.macs / full_macs, search_loss(record.digest)),
            fontsize=7,
            xytext=offset,
            textcoords="offset points",
            ha=align,
        )
        if record.digest in held_out:
            ax.scatter(record.macs / full_macs, held_out[record.digest].quality_loss, marker="+", c="tab:orange", s=60)
    ax.scatter([], [], marker="x", c="tab:red", label="FORA every-N")
    if any(record.digest in held_out for record in baselines.values()):
        ax.scatter([], [], marker="+", c="tab:orange", s=60, label="FORA, held out")
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
    """A heuristic schedule against the front's best schedule that costs no more MACs.

    The front's best is chosen by the search's own loss. When it is a FORA schedule (the baseline itself, or
    FORA-5 at FORA-6's MACs), or when it is not better than the baseline with confidence on the search's own
    images (the selection-bias guard: the best of many near-equal candidates is mostly the luckiest), the
    search has nothing better to offer there: `kept` names the FORA schedule and no claim is made.
    Otherwise the verdict is on held-out images only: the paired difference of held-out losses (baseline −
    rival, per prompt) with its bootstrap interval.
    """

    name: str
    baseline: EvaluationRecord
    baseline_loss: float
    rival: EvaluationRecord | None = None
    rival_loss: float | None = None
    baseline_held_out: EvaluationRecord | None = None
    rival_held_out: EvaluationRecord | None = None
    difference: PairedDifference | None = None
    kept: str | None = None

    @property
    def verdict(self) -> str:
        """The held-out verdict: better, worse or tie; pending before held-out images are scored; FORA kept
        when the front's best at this cost is a FORA schedule or its lead is within noise; "-" when the front
        has nothing this cheap."""
        if self.kept is not None:
            return "FORA kept" if self.rival is None else "FORA kept (lead within noise)"
        if self.rival is None:
            return "-"
        if self.difference is None:
            return "pending"
        return {1: "better", 0: "tie", -1: "worse"}[self.difference.verdict]

    @property
    def beaten(self) -> bool:
        return self.verdict == "better"


def compare_with_baselines(
    front: list[EvaluationRecord],
    baselines: dict[str, EvaluationRecord],
    loss: Callable[[str], float] | None = None,
    held_out: dict[str, EvaluationRecord] | None = None,
    significantly_better: Callable[[str, str], bool] | None = None,
) -> list[BaselineComparison]:
    """For each baseline, the front's best schedule within its MACs by `loss` (a digest's search loss;
    calibration loss when not given), judged on `held_out` records where both have them.

    The baselines seed the search and may sit on the front themselves. When one of them is the front's best
    at a baseline's cost, or `significantly_better(rival, baseline)` says the rival's lead on the search's
    images is within noise, the search has nothing better to offer there and no claim is made either way.
    """
    search_loss = loss or {r.digest: r.quality_loss for r in [*front, *baselines.values()]}.__getitem__
    held_out = held_out or {}
    names = {b.digest: name for name, b in baselines.items()}
    comparisons = []
    for name, baseline in sorted(baselines.items(), key=lambda item: -item[1].macs):
        affordable = [r for r in front if r.macs <= baseline.macs]
        best = min(affordable, key=lambda r: (search_loss(r.digest), r.macs)) if affordable else None
        comparison = BaselineComparison(
            name, baseline, search_loss(baseline.digest), baseline_held_out=held_out.get(baseline.digest)
        )
        if best is not None and best.digest in names:
            comparison = replace(comparison, kept=names[best.digest])
        elif best is not None:
            ours, theirs = held_out.get(best.digest), comparison.baseline_held_out
            difference = (
                paired_difference(ours.scores["prompt_scores"], theirs.scores["prompt_scores"])
                if ours is not None and theirs is not None
                else None
            )
            noise = significantly_better is not None and not significantly_better(best.digest, baseline.digest)
            comparison = replace(
                comparison,
                rival=best,
                rival_loss=search_loss(best.digest),
                rival_held_out=ours,
                difference=difference,
                kept=name if noise else None,
            )
        comparisons.append(comparison)
    return comparisons


def baseline_table(comparisons: list[BaselineComparison], full_macs: float, splits: Splits | None = None) -> str:
    """Markdown: each baseline beside the front's best schedule at no more MACs, on the search's images and
    on the held-out ones, with the held-out verdict.

    "better by" is the rival's held-out loss reduction relative to the baseline's held-out loss, with its 95%
    interval (paired over prompts): an interval that holds zero is a tie, whatever the point estimate.
    """
    lines = []
    if splits is not None:
        lines += [
            f"Search images: {_images(splits.calibration)}"
            + (f", confirmed on {_images(splits.confirmation)}" if splits.confirmation else "")
            + f". Held-out images: {_images(splits.held_out)}.",
            "",
            "The rival is the front's best schedule at no more MACs by the search's loss. When that is a FORA "
            "schedule, or its lead on the search's images is within noise (the paired guard), the search has "
            "nothing better to offer there: FORA kept, and no claim is made. Otherwise the verdict is on the "
            "held-out images only, paired over prompts.",
            "",
        ]
    lines += [
        "| baseline | MACs | rival MACs | search loss: baseline | rival | held-out loss: baseline | rival "
        "| better by (held out) | 95% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        cells = ["-"] * 7
        if c.rival is not None:
            cells[:2] = [f"{c.rival.macs / full_macs:.3f}", f"{c.rival_loss:.5f}"]
        elif c.kept is not None:
            cells[:2] = [c.kept, "-"]
        if c.baseline_held_out is not None:
            cells[2] = f"{c.baseline_held_out.quality_loss:.5f}"
        if c.difference is not None and c.baseline_held_out is not None and c.rival_held_out is not None:
            scale = 100 / max(abs(c.baseline_held_out.quality_loss), 1e-12)
            cells[3:6] = [
                f"{c.rival_held_out.quality_loss:.5f}",
                f"{c.difference.mean * scale:.3g} %",
                f"[{c.difference.low * scale:.3g}, {c.difference.high * scale:.3g}] %",
            ]
        cells[-1] = c.verdict
        lines.append(
            f"| {c.name} | {c.baseline.macs / full_macs:.3f} | {cells[0]} | {c.baseline_loss:.5f} | "
            + " | ".join(cells[1:])
            + " |"
        )
    return "\n".join(lines) + "\n"


def _images(settings: EvaluationSettings) -> str:
    seeds = settings.images_per_prompt
    return (
        f"{settings.num_images} ({len(settings.prompts)} prompts × {seeds} seed{'s' if seeds > 1 else ''} "
        f"from {settings.seed})"
    )


def write_tables(out: Path, entries: list[FrontEntry], full_macs: float) -> None:
    csv_text, markdown = front_table(entries, full_macs)
    write_atomic(out / "front.csv", csv_text)
    write_atomic(out / "front.md", markdown)


def write_history(out: Path, reports: list[GenerationReport]) -> None:
    """One row per generation with what it cost when it first ran (a resumed run keeps the original counts)."""
    lines = ["generation,hypervolume,evaluated,from_database,duplicates,confirmed,front_size,wall_time_s"]
    lines += [
        f"{r.index},{r.hypervolume:.6f},{r.evaluated},{r.from_database},{r.duplicates},{r.confirmed},"
        f"{r.front_size},{r.wall_time_s:.2f}"
        for r in reports
    ]
    write_atomic(out / "history.csv", "\n".join(lines) + "\n")


def describe(
    schedule: CacheSchedule,
    scored: ScoredRecord,
    prepared: PreparedSearch,
    *,
    generation: int,
    rank: int,
    full_macs: float,
) -> CacheSchedule:
    """A front schedule with its figures (and what they mean) and where it came from, ready to save."""
    splits = prepared.splits
    settings = splits.calibration
    quality = (
        f"1 - mean {settings.metric} score over {_images(settings)}"
        + (f", pooled with {_images(splits.confirmation)} once on the front" if splits.confirmation else "")
        + f"; {settings.steps} steps, guidance {settings.guidance_scale}"
    )
    record = scored.record
    metrics = {
        "quality_loss": {"value": scored.loss, "unit": "", "definition": quality},
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
    if scored.held_out_loss is not None:
        metrics["held_out_loss"] = {
            "value": scored.held_out_loss,
            "unit": "",
            "definition": f"1 - mean {settings.metric} score over held-out {_images(splits.held_out)}, "
            "never used by the search",
        }
    provenance = {
        "method": "search",
        "run": prepared.run,
        "generation": generation,
        "rank": rank,
        "preset": prepared.config.preset,
        "seed": prepared.config.seed,
        "evaluation_key": settings.key(),
        "held_out_key": splits.held_out.key(),
    }
    return schedule.with_metadata(
        name=f"{prepared.run}/gen{generation:03d}/rank{rank:02d}",
        metrics=metrics,
        provenance=provenance,
        height=settings.resolution,
        width=settings.resolution,
        guidance_scale=settings.guidance_scale,
    )
