"""Construction for a run (`strategy` construct or refine): the calibration pass on the pool, the probes
through the evaluation memo, the front from `construct`, and how well its error model ranked what it built."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..construct import Constructed, ErrorModel, construct_front, probe, weight_groups
from ..cost import cost_table
from ..evaluation import EvaluationSettings
from ..families import FIDELITY
from ..files import write_atomic
from ..pool import EvaluationPool
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store
from .prepared import PreparedSearch
from .splits import SplitScorer


def construct_for_run(
    prepared: PreparedSearch,
    template: CacheSchedule,
    settings: EvaluationSettings,
    pool: EvaluationPool,
    store: Store,
    relative_macs: Callable[[CacheSchedule], float],
    events: Any,
) -> list[Constructed]:
    """The constructed front on the construction split `settings`. The pass and the fitted weights are kept in
    OUT/RUN/construction.json, so a resumed run does not repeat them; the probes are stored like any
    evaluation. `events` is the run's observers (phases and notes)."""
    start = time.perf_counter()
    path = prepared.out / "construction.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("split") == settings.key() and "output_gram" in stored["model"]:
        model = ErrorModel.from_dict(stored["model"])
    else:
        events.phase(f"construction: calibration pass on {settings.num_images} images")
        grams = pool.lane_gram(settings)
        probes = {name: probe(template, lanes, name) for name, lanes in weight_groups(template).items()}
        events.phase(f"construction: {len(probes)} probes of the error model")
        scored = SplitScorer(settings, store, pool, needs_families=True).scores(
            {schedule.digest(): schedule for schedule in probes.values()}
        )
        measured = {name: image_mse(scored[schedule.digest()]) for name, schedule in probes.items()}
        model = ErrorModel.fit(
            template, np.asarray(grams["gram"], dtype=float), np.asarray(grams["output_gram"], dtype=float), measured
        )
    built = time.perf_counter()
    macs = cost_table(prepared.spec, height=settings.resolution, width=settings.resolution).component_macs()
    lane_macs = np.concatenate([macs[group.name].ravel() for group in template.groups])
    front = construct_front(template, model, lane_macs, relative_macs)
    seconds = time.perf_counter() - built
    write_atomic(path, json.dumps({
        "split": settings.key(),
        "model": model.to_dict(),
        "front": [{"cost": c.cost, "predicted": c.predicted, "fill": c.schedule.fill} for c in front],
        "construction_s": seconds,
    }))  # fmt: skip
    images = settings.num_images * (1 + len(model.probes))
    events.note(
        f"construction: {len(front)} schedules in {seconds:.1f} s from {images} calibration images "
        f"({time.perf_counter() - start:.0f} s in all)"
    )
    return front


def prediction_check(constructed: dict[str, Constructed], records: dict[str, EvaluationRecord]) -> str | None:
    """How well each error model ranks what it built: per layout, Spearman's ρ between predicted error and
    measured mean squared image error on the calibration images (the figure that says whether to trust
    construction). Layouts' predictions are in different units, so they are not ranked together."""
    by_layout: dict[str, list[tuple[float, float]]] = {}
    for digest, c in constructed.items():
        if digest in records:
            layout = c.schedule.provenance["layout"]
            by_layout.setdefault(layout, []).append((c.predicted, image_mse(records[digest])))
    figures = [
        f"{layout} {spearmanr(*zip(*pairs, strict=True)).statistic:.2f}"
        for layout, pairs in by_layout.items()
        if len(pairs) >= 3
    ]
    return "construction ranks (Spearman ρ): " + ", ".join(figures) if figures else None


def image_mse(record: EvaluationRecord) -> float:
    """Mean squared error per pixel to the uncached images ([0, 1] scale), from the stored PSNR of each."""
    return float(np.mean([10 ** (-psnr / 10) for psnr in FIDELITY.values(record.scores) or [0.0]]))
