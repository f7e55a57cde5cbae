"""Surrogate screening: features by hand, a fitted model that ranks candidates by their true margin to the
front (also when a few losses are huge), and the screen's fallbacks."""

from __future__ import annotations

import numpy as np

from ecad_search.heuristics import fora
from ecad_search.schedule import BlockGroup
from ecad_search.search.surrogate import MIN_EVALUATIONS, MaskFeatures, fit_loss_model, front_margin, screen

GROUPS = (BlockGroup("transformer_blocks", 2, ("attn1", "ff")),)


def test_features_are_mean_age_per_step_and_component_kind_then_reuses_per_component() -> None:
    template = fora(GROUPS, 5, 2)
    features = MaskFeatures(template)
    # FORA-2 computes steps 0, 2, 4: steps 1 and 3 use outputs one step old.
    assert features(template.genome()[None]).tolist() == [[1, 1, 0, 0, 1, 1, 0, 0, 2, 2, 2, 2]]
    genome = np.ones((4, 2, 2), dtype=bool)
    genome[:3, 0, 0] = False  # block 0's attention reuses steps 1-3, computes again at step 4
    expected_ages = [0.5, 0, 1, 0, 1.5, 0, 0, 0]  # per step: attn1 (mean over both blocks), ff
    assert features(genome.reshape(1, -1)).tolist() == [[*expected_ages, 3, 0, 0, 0]]


def synthetic(n: int, rng: np.random.Generator, template) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Random masks whose loss grows with the staleness of later steps' outputs, plus noise."""
    genomes = rng.random((n, template.genome_length)) < rng.uniform(0.2, 1.0, (n, 1))
    ages = MaskFeatures(template)(genomes)[:, : (template.num_steps - 1) * 3]
    weights = np.repeat(np.linspace(0.2, 2.0, template.num_steps - 1), 3)
    return genomes, ages @ weights + rng.normal(0, 0.5, n)


def test_the_model_ranks_new_candidates_by_their_margin_to_the_front_even_with_huge_outliers() -> None:
    template = fora((BlockGroup("transformer_blocks", 6, ("attn1", "attn2", "ff")),), 20, 2)
    features = MaskFeatures(template)
    rng = np.random.default_rng(0)
    genomes, losses = synthetic(300, rng, template)
    losses[:6] *= 100  # a few candidates far off the front, as crossover children can be
    model = fit_loss_model(features(genomes), losses)
    assert model is not None and 0 < model.loo_rmse < 0.2
    candidates, truth = synthetic(100, rng, template)
    costs = candidates.mean(axis=1)
    front = [(float(np.quantile(truth, 0.2)), 0.4), (float(np.quantile(truth, 0.05)), 0.8)]
    chosen = set(screen(model, features(candidates), costs, front, 25).tolist())
    best = np.argsort(front_margin(truth, costs, front))[:10]
    assert sum(int(b) in chosen for b in best) >= 8, "the screen keeps the candidates that would improve the front"
    random_share = np.mean([len(set(rng.choice(100, 25, replace=False)) & set(best.tolist())) for _ in range(200)])
    assert random_share < 4


def test_front_margin_by_hand() -> None:
    front = [(0.5, 0.3), (0.2, 0.6)]
    margins = front_margin(np.array([0.4, 0.3, 0.9]), np.array([0.35, 0.7, 0.1]), front)
    assert np.allclose(margins[:2], [-0.1, 0.1]) and margins[2] == -np.inf


def test_no_model_below_the_minimum_and_then_the_first_candidates_are_kept() -> None:
    template = fora(GROUPS, 5, 2)
    rng = np.random.default_rng(1)
    genomes = rng.random((MIN_EVALUATIONS - 1, template.genome_length)) < 0.5
    assert fit_loss_model(MaskFeatures(template)(genomes), rng.random(MIN_EVALUATIONS - 1)) is None
    assert screen(None, np.zeros((5, 12)), np.zeros(5), [], 3).tolist() == [0, 1, 2]
