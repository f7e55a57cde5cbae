"""The step-to-step change profile: it measures without changing anything, and its figures are right."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.models.blocks import discover_block_groups
from ecad_search.runtime.profile import ChangeProfiler
from ecad_search.testing import TINY_PIXART_CALL_KWARGS

STEPS = 6


def run(pipe, prompts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    return pipe(
        prompts, num_inference_steps=STEPS, generator=generator, output_type="pt", **TINY_PIXART_CALL_KWARGS
    ).images


def test_profiling_changes_nothing_and_measures_every_component(tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    prompts = ["a red cat", "a blue house"]
    plain = run(tiny_pixart_pipe, prompts)
    groups = discover_block_groups(tiny_pixart_pipe.transformer)
    modules = list(tiny_pixart_pipe.transformer.transformer_blocks[0].children())
    with ChangeProfiler(tiny_pixart_pipe.transformer, groups, STEPS) as profiler:
        profiled = run(tiny_pixart_pipe, prompts)
        again = run(tiny_pixart_pipe, prompts)
    assert torch.equal(plain, profiled) and torch.equal(plain, again), "profiling must not change any output"
    assert not any(hasattr(m, "_diffusers_hook") for m in modules), "every hook is gone afterwards"
    profile = profiler.profile(images=4)
    (changes,) = profile.changes.values()
    assert changes.shape == (STEPS - 1, groups[0].num_blocks, len(groups[0].components))
    assert np.isfinite(changes).all() and (changes > 0).all()
    assert json.loads(json.dumps(profile.to_dict()))["changes"]["transformer_blocks"][0][0][0] > 0


def test_the_relative_change_is_the_l1_ratio_per_image() -> None:
    transformer = torch.nn.Module()
    transformer.transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
    transformer.transformer_blocks[0].attn1 = torch.nn.Identity()
    from ecad_search.schedule import BlockGroup

    profiler = ChangeProfiler(transformer, (BlockGroup("transformer_blocks", 1, ("attn1",)),), num_steps=3)
    key = (0, 0, 0)
    first = torch.tensor([[1.0, -1.0], [2.0, 2.0]])
    profiler.observe(key, first)
    profiler.observe(key, first * 1.5)
    profiler.observe(key, first * 1.5)
    profiler.observe(key, first * 4)
    changes = profiler.profile(images=2).changes["transformer_blocks"][:, 0, 0]
    assert changes.tolist() == [0.5, 0.0], "the fourth call starts the next run, so it is compared with nothing"


def test_profile_command_writes_the_heat_map_and_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "digits-change.png"
    result = CliRunner().invoke(app, ["profile", "--images-per-prompt", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["model"] == "digits" and figures["images"] == 10 and out.stat().st_size > 10_000
    changes = np.array(figures["changes"]["transformer_blocks"])
    assert changes.shape == (19, 6, 3)
    attn1, attn2, ff = (changes[:, :, i].mean() for i in range(3))
    assert attn2 < attn1 and attn2 < ff, "the digits model's cross-attention barely moves between steps"
