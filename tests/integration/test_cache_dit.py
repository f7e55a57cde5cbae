"""A schedule exported with `convert --to cache-dit-yaml` is read by `cache_dit.load_configs` and applied by
`cache_dit.enable_cache` to a stock pipeline: cache-dit skips exactly the steps the export says."""

from __future__ import annotations

from pathlib import Path

import cache_dit
import torch
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.formats import save_schedule
from ecad_search.heuristics import fora
from ecad_search.models.blocks import discover_block_groups
from ecad_search.testing import TINY_PIXART_CALL_KWARGS, tiny_pixart_pipeline

STEPS = 8


def generate(pipe) -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    return pipe("a red cat", num_inference_steps=STEPS, generator=generator, output_type="pt",
                **TINY_PIXART_CALL_KWARGS).images  # fmt: skip


def test_cache_dit_applies_the_exported_yaml_to_a_stock_pipeline(tmp_path: Path) -> None:
    pipe = tiny_pixart_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    uncached = generate(pipe)
    schedule = fora(discover_block_groups(pipe.transformer), STEPS, 3)
    save_schedule(schedule, tmp_path / "fora3.json")
    config = tmp_path / "fora3.yaml"
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "fora3.json"), str(config), "--to", "cache-dit-yaml"])
    assert result.exit_code == 0, result.output
    assert config.read_text().startswith("# cache-dit config from ecad-search (fora-3")

    last_block_calls = []
    pipe.transformer.transformer_blocks[-1].register_forward_hook(lambda *_: last_block_calls.append(1))
    cache_dit.enable_cache(pipe, **cache_dit.load_configs(str(config)))
    cached = generate(pipe)
    computed = [s for s in range(STEPS) if schedule.step_compute_fraction()[s] == 1]
    assert computed == [0, 3, 6]
    assert len(last_block_calls) == len(computed), "the last block runs on the computed steps only"
    summaries = cache_dit.summary(pipe)
    assert summaries and all(stats.cached_steps == [1, 2, 4, 5, 7] for stats in summaries), "cache-dit's own count"
    assert 0 < (cached - uncached).abs().max() < 0.5 and torch.isfinite(cached).all()

    cache_dit.disable_cache(pipe)
    assert torch.equal(generate(pipe), uncached), "disabled, the pipeline is the stock one again"
