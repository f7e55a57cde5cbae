"""The registry, and loading real pipelines through the same code a user runs (tiny ones, saved locally)."""

from __future__ import annotations

import pytest
import torch

from ecad_search.cost import cost_table
from ecad_search.generation import GenerationSettings, generate, load_pipeline
from ecad_search.models import ModelNotAvailableError, block_groups, get_family, get_model, model_names
from ecad_search.models.blocks import discover_block_groups
from ecad_search.models.pixart import at_resolution
from ecad_search.testing import TINY_PIXART_CALL_KWARGS


def test_registry_names_and_unknown_model() -> None:
    assert {"pixart-alpha", "pixart-sigma", "flux-dev", "digits"} <= set(model_names())
    with pytest.raises(ValueError, match="unknown model 'sdxl': use one of") as err:
        get_model("sdxl")
    assert "\n" not in str(err.value)


def test_registered_architectures_without_weights() -> None:
    alpha, sigma, flux = get_model("pixart-alpha"), get_model("pixart-sigma"), get_model("flux-dev")
    assert [(g.name, g.num_blocks, g.components) for g in block_groups(alpha)] == [
        ("transformer_blocks", 28, ("attn1", "attn2", "ff"))
    ]
    assert [(g.num_blocks, g.components) for g in block_groups(flux)] == [
        (19, ("attn", "ff", "ff_context")),
        (38, ("attn", "proj_mlp", "proj_out")),
    ]
    assert (alpha.text_tokens, sigma.text_tokens, flux.text_tokens) == (120, 300, 512)
    assert alpha.transformer_id == "PixArt-alpha/PixArt-XL-2-256x256"
    assert alpha.pipeline_id == "PixArt-alpha/PixArt-XL-2-1024-MS"
    assert alpha.default_steps == sigma.default_steps == flux.default_steps == 20
    assert at_resolution(alpha, 1024).transformer_id == "PixArt-alpha/PixArt-XL-2-1024-MS"
    with pytest.raises(ValueError, match="256, 512, 1024"):
        at_resolution(sigma, 300)


def test_missing_weights_offline_is_a_clear_error() -> None:
    with pytest.raises(ModelNotAvailableError, match=r"HF_HUB_OFFLINE is set.*`hf download PixArt-alpha") as err:
        load_pipeline(get_model("pixart-alpha"))
    assert "\n" not in str(err.value)


def test_local_pixart_folder_loads_and_generates(tiny_pixart_dir, tiny_pixart_pipe) -> None:  # type: ignore[no-untyped-def]
    spec = get_model(str(tiny_pixart_dir))
    assert (spec.family, spec.pipeline_class, spec.text_tokens) == ("pixart", "PixArtAlphaPipeline", 16)
    assert (spec.vae_scale_factor, spec.resolution) == (2, 16)
    pipe = load_pipeline(spec, dtype=torch.float32)
    settings = GenerationSettings.for_model(spec, steps=4, guidance_scale=4.5, seed=3)
    images, seconds = generate(pipe, spec, ["a red cat"], settings, output_type="pt")
    expected = tiny_pixart_pipe(
        "a red cat",
        num_inference_steps=4,
        guidance_scale=4.5,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
        **TINY_PIXART_CALL_KWARGS,
    ).images
    assert torch.equal(images, expected) and seconds > 0


def test_local_flux_folder_cost_and_layout(tiny_flux_dir) -> None:  # type: ignore[no-untyped-def]
    spec = get_model(str(tiny_flux_dir))
    assert (spec.family, spec.text_tokens, spec.cfg_batch) == ("flux", 16, False)
    pipe = load_pipeline(spec)
    settings = GenerationSettings.for_model(spec, steps=3, resolution=32)
    images, _ = generate(pipe, spec, ["a red cat"], settings, output_type="pt")
    assert images.shape == (1, 3, 32, 32) and pipe.transformer.dtype == torch.float32
    table = cost_table(spec, height=32, width=32)
    dim, image_tokens, text_tokens = 32, 64, 16
    attn, ff, ff_context = table.component_macs(attention_matmuls=False)["transformer_blocks"][0]
    assert attn == 4 * (image_tokens + text_tokens) * dim * dim
    assert ff == 8 * image_tokens * dim * dim and ff_context == 8 * text_tokens * dim * dim


@pytest.mark.parametrize("name", ["pixart-alpha", "pixart-sigma", "flux-dev", "digits", "tiny-pixart", "tiny-flux"])
def test_block_groups_from_the_config_match_the_built_transformer(name, tiny_pixart_dir, tiny_flux_dir) -> None:  # type: ignore[no-untyped-def]
    spec = get_model({"tiny-pixart": tiny_pixart_dir, "tiny-flux": tiny_flux_dir}.get(name, name))
    with torch.device("meta"):
        transformer = get_family(spec).transformer_class().from_config(spec.transformer_config)
    assert block_groups(spec) == discover_block_groups(transformer)
