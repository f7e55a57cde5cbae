"""Analytic MACs reproduce ECAD's profiler figures, and attention matmuls follow the closed form."""

from __future__ import annotations

import pytest

from ecad_search import estimate_macs
from ecad_search.cost import cache_memory, cost_table
from ecad_search.heuristics import fora, no_cache
from ecad_search.models import block_groups, get_model, schedule_metadata

G = 1e9


def model_schedule(name: str, make, *args):  # type: ignore[no-untyped-def]
    spec = get_model(name)
    return make(block_groups(spec), 20, *args).with_metadata(**schedule_metadata(spec))


def test_pixart_alpha_component_table_matches_ecad() -> None:
    table = cost_table(get_model("pixart-alpha"), height=256, width=256)
    sa, ca, ff = table.component_macs(attention_matmuls=False)["transformer_blocks"][0] * 2 / G
    assert (round(sa, 4), round(ca, 4), round(ff, 4)) == (2.7179, 1.9960, 5.4358)
    assert round(table.overhead_macs(attention_matmuls=False) * 2 / G, 4) == 1.4984


def test_pixart_alpha_whole_run_and_fora() -> None:
    plain = model_schedule("pixart-alpha", no_cache)
    assert estimate_macs(plain, attention_matmuls=False, batch_size=2) / 1e12 == pytest.approx(5.714, abs=5e-4)
    assert estimate_macs(plain, attention_matmuls=False) == estimate_macs(plain, attention_matmuls=False, batch_size=2)
    expected = {2: 2.872, 3: 2.019, 4: 1.451, 5: 1.167}
    for n, tmacs in expected.items():
        assert estimate_macs(model_schedule("pixart-alpha", fora, n), attention_matmuls=False) / 1e12 == pytest.approx(
            tmacs, abs=1e-3
        )


def test_attention_matmuls_closed_form() -> None:
    table = cost_table(get_model("pixart-alpha"), height=256, width=256)
    sa, ca, ff = table.attention_macs["transformer_blocks"][0]
    tokens, dim = 256, 1152
    assert sa == 2 * tokens * tokens * dim
    assert ca == 2 * tokens * 120 * dim
    assert ff == 0


def test_flux_component_table_matches_ecad() -> None:
    spec = get_model("flux-dev")
    for size, double, single, overhead in (
        (256, (57.98, 38.66, 77.31), (43.49, 57.98, 72.48), 19.64),
        (1024, (347.89, 618.48, 77.31), (260.92, 347.89, 434.87), 22.66),
    ):
        table = cost_table(spec, height=size, width=size)
        linear = table.component_macs(attention_matmuls=False)
        assert linear["transformer_blocks"][0] * 2 / G == pytest.approx(double, abs=0.011)
        assert linear["single_transformer_blocks"][0] * 2 / G == pytest.approx(single, abs=0.011)
        assert table.overhead_macs(attention_matmuls=False) * 2 / G == pytest.approx(overhead, abs=0.011)


def test_flux_whole_run_batch_two_matches_ecad() -> None:
    plain = model_schedule("flux-dev", no_cache)
    assert estimate_macs(plain, attention_matmuls=False, batch_size=2) / 1e12 == pytest.approx(198.69, abs=0.01)
    assert estimate_macs(plain, attention_matmuls=False) == pytest.approx(198.69e12 / 2, rel=1e-4)


def test_cache_memory_of_fora() -> None:
    memory = cache_memory(model_schedule("pixart-alpha", fora, 2))
    tokens, dim, rows, fp16 = 256, 1152, 2, 2
    assert memory.peak_tensors == 84
    assert memory.peak_bytes == 84 * tokens * dim * rows * fp16
    assert cache_memory(model_schedule("pixart-alpha", no_cache)).peak_bytes == 0


def test_disk_cached_table_is_the_probed_one(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ecad_search import cost
    from ecad_search.cost.probe import count_macs

    monkeypatch.setenv("ECAD_SEARCH_CACHE", str(tmp_path))
    spec = get_model("flux-dev")
    cost._table.cache_clear()
    probed = cost_table(spec, height=256, width=256)
    (stored,) = (tmp_path / "cost").glob("flux-32x32-*.json")
    cost._table.cache_clear()
    cached = cost_table(spec, height=256, width=256)
    fresh = cost.CostTable.from_dict(count_macs("flux", spec.transformer_config, 32, 32, spec.text_tokens))
    for table in (cached, probed):
        assert table.groups == fresh.groups == block_groups(spec)
        assert table.overhead_macs() == fresh.overhead_macs()
        for name, macs in fresh.component_macs().items():
            assert (table.component_macs()[name] == macs).all()
            assert (table.output_elements[name] == fresh.output_elements[name]).all()
    stored.write_text("{ truncated")
    cost._table.cache_clear()
    assert cost_table(spec, height=256, width=256).overhead_macs() == probed.overhead_macs(), "a bad file is re-probed"
    cost._table.cache_clear()
