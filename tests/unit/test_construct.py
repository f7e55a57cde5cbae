"""Construction: fill errors from Gram matrices, the dynamic program against brute force, the built front."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from ecad_search.compare.methods import OUR_METHODS, learned_settings, our_method
from ecad_search.construct import (
    IN_STEP,
    LAYOUTS,
    ErrorModel,
    construct_front,
    lane_computes,
    probe,
    weight_groups,
    with_lanes,
)
from ecad_search.construct.program import fill_errors, lane_error, plan_counts, plan_lanes, segment_costs
from ecad_search.cost import cost_table
from ecad_search.evaluation import EvaluationSettings, run_template, schedule_macs
from ecad_search.models import get_model


def random_lanes(lanes: int, steps: int, seed: int) -> np.ndarray:
    """Outputs that drift over the steps (a random walk per element), lanes × steps × elements."""
    return np.random.default_rng(seed).normal(size=(lanes, steps, 7)).cumsum(axis=1)


def gram_of(outputs: np.ndarray) -> np.ndarray:
    return np.einsum("lae,lbe->lab", outputs, outputs)


def test_fill_errors_are_the_squared_errors_of_the_fills() -> None:
    outputs = random_lanes(2, 6, 0)
    reuse, forecast = fill_errors(gram_of(outputs), 0), fill_errors(gram_of(outputs), 1)
    y = outputs[1]
    assert reuse[1, 6, 2, 5] == pytest.approx(((y[2] - y[5]) ** 2).sum())
    # First order from computes 1 and 3 to step 5: Y₃ + (Y₃ − Y₁)·(5 − 3)/(3 − 1).
    assert forecast[1, 1, 3, 5] == pytest.approx(((y[3] + (y[3] - y[1]) - y[5]) ** 2).sum())
    # With no earlier compute the forecast has one term: reuse.
    assert forecast[1, 6, 0, 4] == pytest.approx(((y[0] - y[4]) ** 2).sum())
    # Exact on outputs linear in the step.
    linear = np.arange(6)[None, :, None] * np.ones((1, 6, 3)) + 2.0
    assert np.allclose(fill_errors(gram_of(linear), 1)[0, :6], 0.0, atol=1e-9)


@pytest.mark.parametrize("order", [0, 1])
def test_the_dynamic_program_is_optimal_by_brute_force(order: int) -> None:
    steps, lanes = 7, 3
    errors = fill_errors(gram_of(random_lanes(lanes, steps, order + 1)), order)
    segments = segment_costs(errors)
    rng = np.random.default_rng(3)
    weights, macs = rng.uniform(0.5, 2.0, lanes), rng.uniform(1.0, 3.0, lanes)
    for multiplier in (0.01, 0.3, 1.0, 3.0, 30.0, 1000.0):
        plan = plan_lanes(segments, weights, macs, multiplier)
        assert plan.computes[:, 0].all(), "step 0 always computes"
        for lane in range(lanes):

            def objective(computes: tuple[int, ...], lane: int = lane, charge: float = multiplier) -> float:
                error = weights[lane] * lane_error(errors[lane], list(computes), order)
                return error + charge * macs[lane] * len(computes)

            subsets = [(0, *rest) for r in range(steps) for rest in itertools.combinations(range(1, steps), r)]
            best = min(objective(s) for s in subsets)
            chosen = tuple(np.flatnonzero(plan.computes[lane]).tolist())
            assert objective(chosen) == pytest.approx(best)
            assert plan.errors[lane] == pytest.approx(weights[lane] * lane_error(errors[lane], chosen, order))
    assert plan.computes.sum() == lanes, "a prohibitive multiplier computes step 0 alone"


@pytest.mark.parametrize("order", [0, 1])
def test_the_program_per_count_is_optimal_by_brute_force_at_every_count(order: int) -> None:
    steps = 8
    errors = fill_errors(gram_of(random_lanes(1, steps, order + 7)), order)[0]
    plans = plan_counts(segment_costs(errors[None])[0])
    assert sorted(plans) == list(range(1, steps + 1))
    for count, (computes, predicted) in plans.items():
        chosen = tuple(np.flatnonzero(computes).tolist())
        assert len(chosen) == count and chosen[0] == 0
        best = min(
            lane_error(errors, [0, *rest], order) for rest in itertools.combinations(range(1, steps), count - 1)
        )
        assert predicted == pytest.approx(best) and lane_error(errors, chosen, order) == pytest.approx(best)
    assert plans[steps][1] == 0.0, "computing every step fills nothing"


def test_the_front_is_built_in_seconds_and_spans_the_budgets() -> None:
    spec = get_model("digits-28")
    settings = EvaluationSettings("digits-28", "fidelity", ("x",), 1, 20, spec.guidance_scale, spec.resolution)
    template = run_template(spec, settings)
    lanes = len(lane_computes(template))
    gram = gram_of(random_lanes(lanes, 20, 5))
    groups = weight_groups(template)
    assert len(groups) == 3 * 4
    assert sorted(lane for members in groups.values() for lane in members) == list(range(lanes))
    model = ErrorModel.fit(template, gram, gram_of(random_lanes(1, 20, 6))[0], dict.fromkeys(groups, 1.0))
    again = ErrorModel.from_dict(model.to_dict())
    assert again.probes == model.probes and np.array_equal(again.output_gram, model.output_gram)
    macs = cost_table(spec, height=spec.resolution, width=spec.resolution).component_macs()
    lane_macs = np.concatenate([macs[g.name].ravel() for g in template.groups])
    full = schedule_macs(template, spec, settings)
    start = time.perf_counter()
    front = construct_front(template, model, lane_macs, lambda s: schedule_macs(s, spec, settings) / full)
    assert time.perf_counter() - start < 60, "a benchmark times it; this only catches a blow-up"
    layouts = [c.schedule.provenance["layout"] for c in front]
    assert layouts == sorted(layouts, key=LAYOUTS.index), "lane sum's in-step first: refining from them measured best"
    for layout in LAYOUTS:
        costs = [c.cost for c in front if c.schedule.provenance["layout"] == layout]
        assert costs == sorted(costs) and min(costs) < 0.2 and max(costs) > 0.9, layout
    assert {c.schedule.fill for c in front} == {"reuse", "taylor1"}
    for layout in IN_STEP:
        in_step = [c for c in front if c.schedule.provenance["layout"] == layout]
        assert all((lane_computes(c.schedule) == lane_computes(c.schedule)[0]).all() for c in in_step)
        counts = [c.schedule.provenance["computed_steps"] for c in in_step]
        assert all(lane_computes(c.schedule)[0].sum() == n for c, n in zip(in_step, counts, strict=True))
    counts = {c.schedule.provenance["computed_steps"] for c in front if c.schedule.provenance["layout"] in IN_STEP}
    assert counts >= set(range(10, 21)), "every count of computed steps down to half of them, not a hull's"
    for c in front:
        assert c.schedule.mask(template.groups[0].name)[0].all()


def test_probes_skip_their_lanes_on_odd_steps_and_lanes_round_trip() -> None:
    spec = get_model("digits")
    settings = EvaluationSettings("digits", "fidelity", ("x",), 1, 8, spec.guidance_scale, spec.resolution)
    template = run_template(spec, settings)
    computes = np.random.default_rng(0).random(lane_computes(template).shape) < 0.5
    computes[:, 0] = True
    assert np.array_equal(lane_computes(with_lanes(template, computes, "taylor1")), computes)
    lanes = next(iter(weight_groups(template).values()))
    probed = lane_computes(probe(template, lanes, "p"))
    assert (~probed).sum() == len(lanes) * 4 and not probed[lanes][:, 1::2].any()


def test_compare_files_our_schedules_under_the_method_that_made_them() -> None:
    spec = get_model("digits")
    settings = EvaluationSettings("digits", "fidelity", ("x",), 1, 8, spec.guidance_scale, spec.resolution)
    template = run_template(spec, settings)
    made = {
        "learned": template.with_metadata(provenance={"method": "search"}),
        "refined": template.with_metadata(provenance={"method": "search", "strategy": "refine"}),
        "constructed": template.with_metadata(provenance={"method": "constructed", "layout": "in step"}),
    }
    assert {our_method(schedule) for schedule in made.values()} == set(OUR_METHODS) == set(made)
    settings_of = learned_settings([made["refined"]], [(Path("c.json"), made["constructed"])])
    assert [s.method for s in settings_of] == ["refined", "constructed"]
