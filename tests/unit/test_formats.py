"""Schedule files: our format round-trips and validates; ECAD files import with the right polarity."""

from __future__ import annotations

import json
import warnings

import jsonschema
import numpy as np
import pytest

from ecad_search import ScheduleError, load_schedule, save_schedule
from ecad_search.formats import schema, to_cache_dit, to_dict
from ecad_search.formats.ecad import Step0Warning
from ecad_search.heuristics import fora, tgate
from ecad_search.models import block_groups, get_model, schedule_metadata

PIXART = get_model("pixart-alpha")


def pixart_schedule():  # type: ignore[no-untyped-def]
    return tgate(block_groups(PIXART), 20, 10, 2).with_metadata(**schedule_metadata(PIXART))


def ecad_pixart(recompute) -> dict:  # type: ignore[no-untyped-def]
    """An ECAD-format file; `recompute(step, block, component)` gives ECAD's boolean (true = recompute)."""
    steps = {
        f"{s:03d}": {str(b): {c: recompute(s, b, c) for c in ("attn1", "attn2", "ff")} for b in range(28)}
        for s in range(20)
    }
    return {
        "cache_schedule": {"num_blocks": 28, "num_inference_steps": 20, "name": "test", "schedule": steps},
        "config": {"height": 256, "width": 256},
        "metrics": {"total_macs": 1.0e12},
    }


def write(tmp_path, data, name="s.json"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_round_trip_and_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = pixart_schedule()
    path = save_schedule(schedule, tmp_path / "out" / "tgate.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, schema())
    assert data["format_version"] == 2 and data["fill"] == "reuse" and data["provenance"]["tool"] == "ecad-search"
    assert data["mask"]["transformer_blocks"]["attn2"][10] == "0" * 28
    assert data["mask"]["transformer_blocks"]["attn2"][9] == "1" * 28
    loaded = load_schedule(path)
    assert loaded.same_mask(schedule) and loaded.model == schedule.model and loaded.height == 256
    assert not list(tmp_path.glob("out/.*")), "no temporary file is left behind"


def test_ecad_polarity_true_means_recompute(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def recompute(step: int, block: int, component: str) -> bool:
        return step % 2 == 0 or (component == "ff" and block < 5)

    schedule = load_schedule(write(tmp_path, ecad_pixart(recompute)))
    mask = schedule.mask("transformer_blocks")
    assert mask[2].all() and not mask[3, :, :2].any()
    assert mask[3, :5, 2].all() and not mask[3, 5:, 2].any()
    assert schedule.model.name == "pixart-alpha"
    assert schedule.metrics["ecad_macs"]["value"] == 1.0e12


def test_ecad_step0_is_normalised_with_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, ecad_pixart(lambda s, b, c: not (s == 0 and b == 3)))
    with pytest.warns(Step0Warning, match="3 component"):
        schedule = load_schedule(path)
    assert schedule.mask("transformer_blocks")[0].all()


def test_ecad_flux_layout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    double = ("full_attn", "full_ff", "full_ff_context")
    single = ("single_attn", "single_proj_mlp", "single_proj_out")
    steps = {}
    for s in range(20):
        blocks = {str(b): {c: s != 1 or c != "full_ff" for c in double} for b in range(19)}
        blocks.update({f"single_{b}": {c: s != 2 or b != 7 for c in single} for b in range(38)})
        steps[f"{s:03d}"] = blocks
    data = {
        "cache_schedule": {
            "num_blocks": 19,
            "num_single_blocks": 38,
            "num_inference_steps": 20,
            "schedule": steps,
        }
    }
    schedule = load_schedule(write(tmp_path, data))
    assert schedule.model.name == "flux-dev"
    double_mask = schedule.mask("transformer_blocks")
    assert not double_mask[1, :, 1].any() and double_mask[1, :, [0, 2]].all()
    single_mask = schedule.mask("single_transformer_blocks")
    assert not single_mask[2, 7].any() and single_mask[2].sum() == 37 * 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["mask"]["transformer_blocks"]["attn1"].__setitem__(3, "1" * 27), "has 27 characters"),
        (
            lambda d: d["mask"]["transformer_blocks"].__setitem__("attn3", ["1" * 28] * 20),
            "unknown component",
        ),
        (lambda d: d["mask"]["transformer_blocks"]["ff"].pop(), "has 19 steps"),
        (lambda d: d.__setitem__("format_version", 7), "format_version 7"),
        (
            lambda d: d["groups"][0].__setitem__("num_blocks", "many"),
            "invalid schedule at groups/0/num_blocks",
        ),
        (lambda d: d["mask"]["transformer_blocks"]["attn1"].__setitem__(0, "0" * 28), "step 0 must compute"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, mutate, message) -> None:  # type: ignore[no-untyped-def]
    data = to_dict(pixart_schedule())
    mutate(data)
    with pytest.raises(ScheduleError, match=message) as err:
        load_schedule(write(tmp_path, data))
    assert "\n" not in str(err.value)


def test_malformed_json_and_unknown_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError, match=r"not valid JSON \(line 1, column 12"):
        load_schedule(write(tmp_path, '{"format": }'))
    with pytest.raises(ScheduleError, match="neither an ecad-search schedule"):
        load_schedule(write(tmp_path, {"hello": 1}))


def test_ecad_unknown_component(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = ecad_pixart(lambda s, b, c: True)
    data["cache_schedule"]["schedule"]["004"]["2"]["attn9"] = True
    with pytest.raises(ScheduleError, match=r"unknown component\(s\) \['attn9'\]"):
        load_schedule(write(tmp_path, data))


def test_cache_dit_export() -> None:
    schedule = fora(block_groups(PIXART), 20, 3).with_metadata(**schedule_metadata(PIXART))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = to_cache_dit(schedule)["cache_config"]
    assert any("Fn" in str(w.message) for w in caught)
    assert config["steps_computation_mask"] == [1 if s % 3 == 0 else 0 for s in range(20)]
    assert config["num_inference_steps"] == 20 and config["steps_computation_policy"] == "static"
    assert config["max_warmup_steps"] == 1 and config["Fn_compute_blocks"] == 1
    mask = np.ones((20, 28, 3), dtype=bool)
    mask[5, :20] = False
    partial = schedule.with_metadata(masks={"transformer_blocks": mask})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert to_cache_dit(partial)["cache_config"]["steps_computation_mask"][5] == 0
        assert to_cache_dit(partial, threshold=0.25)["cache_config"]["steps_computation_mask"][5] == 1
