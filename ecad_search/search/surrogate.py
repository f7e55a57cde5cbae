"""Surrogate screening: a cheap model of quality loss from the mask decides which offspring are worth images.

Every candidate the search generates costs its whole image budget, while breeding one costs nothing, and its
MACs are known exactly before any image exists. So a generation breeds several times as many offspring as it
will generate, predicts each one's loss from its mask with a model fitted on every evaluation the search
already holds, and generates only those predicted to land closest to (or beyond) the archive's front at their
own cost.

The model is ridge regression on what makes a reused output wrong: how stale it is. For every step and every
kind of block component (attention, cross-attention, feed-forward; per block group) the mean age, over the
blocks, of the outputs that step uses (0 when computed, k when reused from k steps before), and for every
block component its number of reuses. Features are standardised and the ridge penalty is chosen by exact
leave-one-out error over a small grid (scikit-learn), so nothing is tuned by hand per model. The model is fitted to each
loss's quantile among the evaluations, not the loss itself, and its prediction is mapped back through the
evaluations' sorted losses: losses are heavy-tailed (a crossover child far from the front can lose a hundred
times more than a front member), and fitted raw, those few far points decide the fit while the screen has to
rank candidates near the front (docs/search.md, "Surrogate screening", has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..schedule import CacheSchedule

PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
"""The ridge penalties tried, relative to the number of evaluations (after standardising)."""

MIN_EVALUATIONS = 16
"""Fewer evaluations than this leave the model unfitted and screening off: a model from a handful of points
would steer the search by noise."""


class MaskFeatures:
    """The features of a genome laid out as `CacheSchedule.genome()` does (per step: every group's blocks ×
    components; step 0, always computed, left out; with `fill_genes`, the fill's genes last, which add the
    fill's order as a feature)."""

    def __init__(self, template: CacheSchedule, fill_genes: bool = False) -> None:
        self.fill_genes = fill_genes
        self.length = template.genome_length
        self.steps = template.num_steps - 1
        self.genes_per_step = template.genes_per_step
        kinds: list[int] = []
        names: list[tuple[str, str]] = []
        for group in template.groups:
            for _ in range(group.num_blocks):
                for component in group.components:
                    if (group.name, component) not in names:
                        names.append((group.name, component))
                    kinds.append(names.index((group.name, component)))
        kind = np.array(kinds)
        self.kind_share = np.stack([(kind == k) / max(int((kind == k).sum()), 1) for k in range(len(names))], 1)

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """(n, features) for (n, genome length) booleans."""
        genomes = np.asarray(genomes, dtype=bool)
        grid = genomes[:, : self.length].reshape(len(genomes), self.steps, self.genes_per_step)
        ages = np.zeros(grid.shape, dtype=float)
        previous = np.zeros((len(genomes), self.genes_per_step))
        for step in range(self.steps):
            previous = np.where(grid[:, step], 0.0, previous + 1.0)
            ages[:, step] = previous
        mean_age = ages @ self.kind_share
        reuses = (~grid).sum(axis=1)
        features = [mean_age.reshape(len(genomes), -1), reuses]
        if self.fill_genes:
            features.append(genomes[:, self.length :].sum(axis=1, keepdims=True))
        return np.concatenate(features, axis=1)


@dataclass(frozen=True)
class LossModel:
    """A fitted ridge model of loss quantiles, its leave-one-out error (in quantiles, for reports), and the
    sorted losses that map a quantile back to a loss."""

    regression: Pipeline
    loo_rmse: float
    losses: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        quantile = self.regression.predict(features)
        return np.interp(quantile, np.linspace(0.0, 1.0, len(self.losses)), self.losses)


def fit_loss_model(features: np.ndarray, losses: np.ndarray) -> LossModel | None:
    """Ridge regression of loss quantiles (scikit-learn's efficient leave-one-out picks the penalty); None
    below `MIN_EVALUATIONS`."""
    n = len(losses)
    if n < MIN_EVALUATIONS:
        return None
    quantiles = (rankdata(losses) - 1) / max(n - 1, 1)
    ridge = RidgeCV(alphas=np.array(PENALTIES) * n)
    regression = make_pipeline(StandardScaler(), ridge).fit(features, quantiles)
    return LossModel(regression, float(np.sqrt(-ridge.best_score_)), np.sort(losses))


def front_margin(predicted: np.ndarray, costs: np.ndarray, front: list[tuple[float, float]]) -> np.ndarray:
    """How far each candidate's predicted loss lies above the front's best loss at no more cost (negative:
    it would improve the front); a candidate cheaper than the whole front would extend it, -inf."""
    margins = np.full(len(predicted), -np.inf)
    for index, (loss, cost) in enumerate(zip(predicted, costs, strict=True)):
        affordable = [front_loss for front_loss, front_cost in front if front_cost <= cost + 1e-12]
        if affordable:
            margins[index] = loss - min(affordable)
    return margins


def screen(
    model: LossModel | None,
    features: np.ndarray,
    costs: np.ndarray,
    front: list[tuple[float, float]],
    count: int,
) -> np.ndarray:
    """Indices of the `count` candidates to generate: the smallest front margins by the model's prediction,
    ties in the given order; without a model, the first `count`."""
    if model is None or count >= len(costs):
        return np.arange(min(count, len(costs)))
    margins = front_margin(model.predict(features), costs, front)
    return np.sort(np.argsort(margins, kind="stable")[:count])
