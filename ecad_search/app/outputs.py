"""What a search leaves under its output folder, kept current by `OutputWriter` (an observer of the run): the
current front as schedule files, a Pareto plot with the FORA baselines marked, a CSV and markdown table, the
comparison with FORA (`vs_fora.md`) and the history.

Each file is written to a temporary name and renamed, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..families import ADHERENCE, FIDELITY, PSNR_CAP_DB, SSIM, mean
from ..files import write_atomic
from ..formats import save_schedule
from ..schedule import CacheSchedule
from ..search.baselines import ScoredRecord, baseline_table, describe_images
from ..search.run import SearchObserver
from ..store import EvaluationRecord

if TYPE_CHECKING:
    from ..search.driver import GenerationReport
    from ..search.prepared import PreparedSearch
    from ..search.run import SearchRun


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
    fidelity: bool = False,
) -> None:
    """The search's loss against MACs (fraction of uncached): all evaluations, the front, the baselines (FORA
    every N, and fewer steps), and the held-out losses of the front and of the baselines once scored (a second,
    marked series). `loss` gives the search's loss of a baseline (pooled once confirmed), so it sits where the
    search saw it.

    A quality loss is drawn logarithmic above 1e-4 (linear below, so a zero loss still shows): the schedules
    worth comparing differ by a few percent of a small loss, invisible on a linear axis next to the cheapest
    ones. A fidelity search's loss is drawn as what it is, the mean PSNR to the uncached images, on a linear
    axis that spans the cached schedules (the uncached run's 100 dB cap would flatten them).
    """
    from ..plots import cost_loss_figure, save_plot

    axis = (
        "mean PSNR to uncached, dB (higher is better)" if fidelity else "quality loss (lower is better; log above 1e-4)"
    )
    shown = _psnr_of_loss if fidelity else float
    fig, ax = cost_loss_figure(title, axis)
    ax.scatter(
        [r.macs / full_macs for r in evaluated],
        [shown(r.quality_loss) for r in evaluated],
        s=8,
        c="0.75",
        label="evaluated",
    )
    ordered = sorted(front, key=lambda e: e.scored.record.macs)
    ax.step(
        [e.scored.record.macs / full_macs for e in ordered],
        [shown(e.scored.loss) for e in ordered],
        where="post",
        c="tab:blue",
        marker="o",
        ms=4,
        label="front (search loss)",
    )
    scored = [e for e in ordered if e.scored.held_out_loss is not None]
    if scored:
        ax.scatter(
            [e.scored.record.macs / full_macs for e in scored],
            [shown(e.scored.held_out_loss) for e in scored],
            marker="D",
            s=14,
            facecolors="none",
            edgecolors="tab:orange",
            label="front, held out",
        )
    search_loss = loss or (lambda digest: {r.digest: r.quality_loss for r in baselines.values()}[digest])
    for name, record, offset, align in _label_places(baselines, full_macs):
        where = (record.macs / full_macs, shown(search_loss(record.digest)))
        marker = "v" if name.endswith(" steps") else "x"
        ax.scatter(*where, marker=marker, c="tab:red", s=40)
        ax.annotate(name, where, fontsize=7, xytext=offset, textcoords="offset points", ha=align)
        if record.digest in held_out:
            ax.scatter(where[0], shown(held_out[record.digest].quality_loss), marker="+", c="tab:orange", s=60)
    ax.scatter([], [], marker="x", c="tab:red", label="FORA every-N")
    if any(name.endswith(" steps") for name in baselines):
        ax.scatter([], [], marker="v", c="tab:red", label="uncached, fewer steps")
    if any(record.digest in held_out for record in baselines.values()):
        ax.scatter([], [], marker="+", c="tab:orange", s=60, label="baselines, held out")
    if fidelity:
        cached = [shown(r.quality_loss) for r in evaluated if r.quality_loss > 0]
        if cached:
            ax.set_ylim(min(cached) - 1, max(cached) + 1)
    else:
        ax.set_yscale("symlog", linthresh=1e-4)
    save_plot(fig, ax, path)


def _psnr_of_loss(loss: float) -> float:
    """A fidelity loss (1 − mean PSNR / cap) back as the mean PSNR in dB."""
    return (1 - loss) * PSNR_CAP_DB


def _label_places(
    baselines: dict[str, EvaluationRecord], full_macs: float
) -> list[tuple[str, EvaluationRecord, tuple[float, float], str]]:
    """Where each baseline's label goes: baselines at (nearly) the same MACs (FORA-5 and FORA-6 at 20 steps,
    FORA-2 and 10 steps) take turns right-above, left-below, right-below, left-above of their point, so their
    labels never overlap."""
    places = [((4, 3), "left"), ((-4, -9), "right"), ((4, -9), "left"), ((-4, 3), "right")]
    by_macs: dict[float, list[tuple[str, EvaluationRecord]]] = {}
    for name, record in sorted(baselines.items(), key=lambda item: (item[1].macs, item[1].quality_loss)):
        by_macs.setdefault(round(record.macs / full_macs, 2), []).append((name, record))
    return [
        (name, record, *places[k % len(places)]) for group in by_macs.values() for k, (name, record) in enumerate(group)
    ]


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
    scored_by = (
        f"mean PSNR to the uncached image / {PSNR_CAP_DB:g} dB"
        if settings.objective == "fidelity"
        else f"mean {settings.metric} score"
    )
    quality = (
        f"1 - {scored_by} over {describe_images(settings)}"
        + (f", pooled with {describe_images(splits.confirmation)} once on the front" if splits.confirmation else "")
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
            "definition": f"1 - {scored_by} over held-out {describe_images(splits.held_out)}, never used by the search",
        }
        metrics.update(held_out_families(scored.held_out.scores, describe_images(splits.held_out)))
    provenance = {
        "method": "search",
        "strategy": prepared.config.strategy,
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


def held_out_families(scores: dict[str, Any], images: str) -> dict[str, dict[str, Any]]:
    """The held-out means of the families beside the search's loss (`families`), as schedule-file metrics."""
    found = {}
    for key, family, unit, definition in (
        ("held_out_psnr_db", FIDELITY, "dB", "mean PSNR to the uncached image of the same seed"),
        ("held_out_ssim", SSIM, "", "mean SSIM to the uncached image of the same seed"),
        ("held_out_adherence", ADHERENCE, "points", "share of images that show the prompt, as the judge reads it"),
    ):
        value = mean(family.values(scores))
        if value is not None:
            found[key] = {"value": value, "unit": unit, "definition": f"{definition}, over held-out {images}"}
    return found


class OutputWriter(SearchObserver):
    """Keeps a run's output folder current: after each generation that ran now (the last one waits for its
    held-out scores), and once the held-out images are scored."""

    def started(self, run: SearchRun) -> None:
        run.prepared.out.mkdir(parents=True, exist_ok=True)

    def generation_done(self, run: SearchRun, report: GenerationReport, standing: object) -> None:
        if not report.replayed and report.index < run.prepared.config.generations - 1:
            write_outputs(run, report.index)

    def held_out_scored(self, run: SearchRun) -> None:
        write_outputs(run, run.prepared.config.generations - 1)


def front_entries(run: SearchRun, index: int) -> list[FrontEntry]:
    """The run's current front, cheapest first, as schedules described with their figures."""
    state = run.search.state
    held_out = run.held_out.records
    entries = []
    for rank, point in enumerate(state.archive.front()):
        record = state.records[point.digest]
        scored = ScoredRecord(record, state.search_loss(point.digest), held_out.get(point.digest))
        schedule = describe(
            run.search.schedule(point.genome), scored, run.prepared, generation=index, rank=rank,
            full_macs=run.full_macs,
        )  # fmt: skip
        name = f"rank{rank:02d}-loss{scored.loss:.4f}-macs{record.cost:.3f}.json"
        entries.append(FrontEntry(schedule, scored, name))
    return entries


def write_outputs(run: SearchRun, index: int) -> None:
    """Every output file of the run as it stands after generation `index`."""
    out = run.prepared.out
    entries = front_entries(run, index)
    write_front(out, entries)
    write_tables(out, entries, run.full_macs)
    table = baseline_table(run.versus_baselines(), run.full_macs, run.prepared.splits, run.claim_rules())
    write_atomic(out / "vs_fora.md", table)
    write_history(out, run.reports)
    hv = run.reports[-1].hypervolume if run.reports else 0.0
    pareto_plot(
        out / "pareto.png",
        list(run.search.state.records.values()),
        entries,
        run.baselines,
        run.held_out.records,
        run.full_macs,
        f"{run.prepared.run}: generation {index + 1}, hypervolume {hv:.4f}",
        run.search.state.search_loss,
        fidelity=run.prepared.settings.objective == "fidelity",
    )
