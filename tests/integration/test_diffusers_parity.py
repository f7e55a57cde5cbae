"""Our policies against diffusers' own cache hooks (diffusers 0.42) on the bundled digits pipeline, same knobs.

First-Block Cache and MagCache follow the same rules: bit for bit. TaylorSeer's rules differ in one place,
which steps run in full (the reference code's counter against diffusers'): the test pins both step sets and
shows that on diffusers' steps our forecast fill gives its output bit for bit. SeaCache's rules differ in what
is filtered (the official code's first-block modulated input against diffusers' raw latent): the test pins
the decisions of diffusers' default, and shows that given our feature diffusers decides and outputs as we do.
docs/policies.md says which rule we follow and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, SeaCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.first_block_cache import apply_first_block_cache
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.hooks.mag_cache import apply_mag_cache
from diffusers.hooks.sea_cache import apply_sea_cache
from diffusers.hooks.taylorseer_cache import apply_taylorseer_cache

from ecad_search import CacheSchedule, apply_policy, apply_schedule, policy_config
from ecad_search.models import get_family, get_model
from ecad_search.models.blocks import discover_block_groups, modulated_input
from ecad_search.policies import magcache
from ecad_search.policies.base import signal_and_noise
from ecad_search.policies.taylorseer import full_steps

STEPS = 20


@pytest.fixture(scope="module")
def pipe() -> Any:
    spec = get_model("digits")
    return get_family(spec).load_pipeline(spec)


def generate(pipe: Any, prompts: tuple[str, ...] = ("3", "7"), guidance: float | None = None) -> torch.Tensor:
    extra = {} if guidance is None else {"guidance_scale": guidance}
    return pipe(list(prompts), num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="pt", **extra).images  # fmt: skip


class Computes:
    """Counts the steps the last block's feed-forward really runs (its first projection is called)."""

    def __init__(self, pipe: Any) -> None:
        self.count = 0
        pipe.transformer.transformer_blocks[-1].ff.net[0].register_forward_pre_hook(self.seen)

    def seen(self, *_: Any) -> None:
        self.count += 1

    def during(self, run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
        self.count = 0
        return run(), self.count


def with_diffusers_cache(pipe: Any, apply: Callable, config: Any, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run with one of diffusers' caches on the transformer, in a cache context (PixArt's pipeline opens none),
    then take every hook off again."""
    transformer = pipe.transformer
    apply(transformer, config)
    _set_cache_context(transformer, CacheContext("cond"))
    try:
        return run()
    finally:
        _set_cache_context(transformer, None)
        for module in transformer.modules():
            registry = getattr(module, "_diffusers_hook", None)
            for name in list(registry.hooks) if registry is not None else []:
                registry.remove_hook(name, recurse=False)


def ours(pipe: Any, name: str, run: Callable[[], torch.Tensor], **knobs: Any) -> torch.Tensor:
    with apply_policy(pipe, policy_config(name, **knobs)):
        return run()


@pytest.mark.parametrize(("threshold", "computed"), [(0.05, 16), (0.1, 10), (0.2, 6)])
def test_first_block_cache_is_diffusers_bit_for_bit(pipe: Any, threshold: float, computed: int) -> None:
    counter = Computes(pipe)
    theirs, their_steps = counter.during(lambda: with_diffusers_cache(
        pipe, apply_first_block_cache, FirstBlockCacheConfig(threshold=threshold), lambda: generate(pipe)))  # fmt: skip
    mine, my_steps = counter.during(
        lambda: ours(pipe, "first-block-cache", lambda: generate(pipe), threshold=threshold)
    )
    assert their_steps == my_steps == computed
    assert torch.equal(mine, theirs)


def test_magcache_is_diffusers_bit_for_bit_on_our_calibration(pipe: Any) -> None:
    ratios = magcache.calibrate(pipe, ["3", "7"], lambda prompts: generate(pipe, tuple(prompts)), STEPS)["ratios"]
    counter = Computes(pipe)
    for threshold, skips, retention, computed in ((0.06, 3, 0.2, 10), (0.24, 5, 0.1, 6), (0.5, 4, 0.1, 5)):
        config = MagCacheConfig(threshold=threshold, max_skip_steps=skips, retention_ratio=retention,
                                num_inference_steps=STEPS, mag_ratios=ratios)  # fmt: skip
        theirs, their_steps = counter.during(lambda c=config: with_diffusers_cache(
            pipe, apply_mag_cache, c, lambda: generate(pipe)))  # fmt: skip
        knobs = {"threshold": threshold, "max_skips": skips, "retention": retention, "ratios": ratios}
        mine, my_steps = counter.during(lambda k=knobs: ours(pipe, "magcache", lambda: generate(pipe), **k))
        assert their_steps == my_steps == computed
        assert torch.equal(mine, theirs)


def diffusers_taylorseer(interval: int, warmup: int, order: int) -> TaylorSeerCacheConfig:
    """diffusers' TaylorSeer on the components we schedule, with float32 terms as ours keeps them."""
    return TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                                 taylor_factors_dtype=torch.float32,
                                 cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|attn2|ff)"])  # fmt: skip


@pytest.mark.parametrize(("interval", "warmup", "order"), [(5, 3, 1), (3, 2, 1), (4, 3, 2)])
def test_taylorseer_differs_in_its_full_steps_only(pipe: Any, interval: int, warmup: int, order: int) -> None:
    theirs_full = [s for s in range(STEPS) if s < warmup or (s - warmup - 1) % interval == 0]
    ours_full = full_steps(STEPS, interval, warmup)
    pinned = {(5, 3): ([0, 1, 2, 4, 9, 14, 19], [0, 1, 2, 7, 12, 17]),
              (3, 2): ([0, 1, 3, 6, 9, 12, 15, 18], [0, 1, 4, 7, 10, 13, 16, 19]),
              (4, 3): ([0, 1, 2, 4, 8, 12, 16], [0, 1, 2, 6, 10, 14, 18])}  # fmt: skip
    assert (theirs_full, ours_full) == pinned[(interval, warmup)]

    counter = Computes(pipe)
    run = lambda: generate(pipe)  # noqa: E731
    theirs, their_steps = counter.during(
        lambda: with_diffusers_cache(pipe, apply_taylorseer_cache, diffusers_taylorseer(interval, warmup, order), run)
    )
    _, my_steps = counter.during(lambda: ours(pipe, "taylorseer", run, interval=interval, warmup=warmup,
                                              max_order=order))  # fmt: skip
    assert (their_steps, my_steps) == (len(theirs_full), len(ours_full))

    groups = discover_block_groups(pipe.transformer)
    computes = np.isin(np.arange(STEPS), theirs_full)
    masks = {g.name: np.broadcast_to(computes[:, None, None], (STEPS, g.num_blocks, len(g.components))) for g in groups}
    on_their_steps = CacheSchedule(groups, masks, fill=f"taylor{order}")
    with apply_schedule(pipe, on_their_steps):
        assert torch.equal(generate(pipe), theirs), "same steps, same forecast: the same image"


def first_block_feature(pipe: Any) -> Callable:
    """SeaCache's indicator as the official code takes it (block 0's modulated input), in the layout diffusers'
    SeaCache filters ((channels, frames, rows, cols) per image), computed from the transformer's own inputs."""
    transformer = pipe.transformer

    def feature(module: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        latent = kwargs.get("hidden_states", args[0] if args else None)
        rows, cols = (size // transformer.config.patch_size for size in latent.shape[-2:])
        hidden = transformer.pos_embed(latent)
        timestep, _ = transformer.adaln_single(kwargs["timestep"], {"resolution": None, "aspect_ratio": None},
                                               batch_size=latent.shape[0], hidden_dtype=hidden.dtype)  # fmt: skip
        modulated = modulated_input(transformer.transformer_blocks[0], hidden, {"timestep": timestep})
        return [row.reshape(rows, cols, -1).permute(2, 0, 1)[:, None] for row in modulated]

    return feature


def sea_context(pipe: Any) -> Any:
    """Give each transformer call the cache context diffusers' SeaCache needs: step, σ and step count. Our σ is
    `b/(a + b)` of the runtime's signal and noise: the normalised filter depends on b/a only."""
    step = {"index": 0}

    def set_context(module: Any, args: tuple, kwargs: dict) -> None:
        signal, noise = signal_and_noise(pipe.scheduler, step["index"])
        context = CacheContext("cond", step_index=step["index"], sigma=noise / (signal + noise),
                               num_inference_steps=STEPS)  # fmt: skip
        _set_cache_context(module, context)
        step["index"] += 1

    return pipe.transformer.register_forward_pre_hook(set_context, with_kwargs=True)


@pytest.mark.parametrize(("threshold", "default_computes", "computed"), [(0.3, 7, 8), (0.6, 5, 6)])
def test_seacache_differs_in_its_feature_only(
    pipe: Any, threshold: float, default_computes: int, computed: int
) -> None:
    """One image, no guidance: diffusers' SeaCache takes one distance per image, ours one per batch."""
    run = lambda: generate(pipe, ("3",), guidance=1.0)  # noqa: E731
    counter = Computes(pipe)
    knobs = {"threshold": threshold, "residual_order": 0, "retention_steps": 1, "cache_end_steps": 1,
             "max_consecutive_cached": 0, "power_exp": 2.0}  # fmt: skip
    mine, my_steps = counter.during(lambda: ours(pipe, "seacache", run, threshold=threshold, power=2.0))
    for feature, expected in ((None, default_computes), (first_block_feature(pipe), computed)):
        hook = sea_context(pipe)
        try:
            config = SeaCacheConfig(**knobs, raw_vision_callback=feature or raw_latent)
            theirs, their_steps = counter.during(lambda c=config: with_diffusers_cache(pipe, apply_sea_cache, c, run))
        finally:
            hook.remove()
        assert their_steps == expected
    assert my_steps == computed and torch.equal(mine, theirs), "given our feature, diffusers' SeaCache is ours"


def raw_latent(module: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """diffusers' generic SeaCache input: the raw latent of each image, as (channels, frames, rows, cols)."""
    latent = kwargs.get("hidden_states", args[0] if args else None)
    return [row[:, None] for row in latent]
