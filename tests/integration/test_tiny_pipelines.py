"""The tiny offline pipelines are real stock pipelines: they run, save, reload bit-identically, and are
deterministic in their seed. Every other test that needs a pipeline relies on these properties."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline, PixArtAlphaPipeline, PixArtSigmaPipeline
from transformers import PreTrainedTokenizerFast

from ecad_search.testing import (
    CLIP_TOKENS,
    FULL_DEPTH_TINY_PIXART,
    TINY_FLUX_CALL_KWARGS,
    TINY_PIXART_CALL_KWARGS,
    full_depth_tiny_pixart_pipeline,
    save_tiny,
    tiny_clip_tokenizer,
    tiny_flux_pipeline,
    tiny_pixart_pipeline,
    tiny_t5_tokenizer,
    tiny_width_pixart_transformer,
)

PROMPT = "a red cat"
PROMPTS = ["a red cat", "A Blue DOG sitting on the moon", "an unknown zebra!", ""]


def generate(pipe: DiffusionPipeline, call_kwargs: Mapping[str, Any]) -> torch.Tensor:
    """Four steps on `PROMPT` from a fixed generator, as a (batch, 3, height, width) tensor."""
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(PROMPT, num_inference_steps=4, output_type="pt", generator=generator, **call_kwargs).images


def weights(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """Every tensor of every model component, keyed by component and parameter name."""
    return {
        f"{name}.{key}": tensor
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
        for key, tensor in module.state_dict().items()
    }


def same_weights(a: DiffusionPipeline, b: DiffusionPipeline) -> bool:
    left, right = weights(a), weights(b)
    return left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)


def token_ids(tokenizer: PreTrainedTokenizerFast, length: int) -> torch.Tensor:
    """Token ids of `PROMPTS`, called the way the pipelines call their tokenizers."""
    encoded = tokenizer(
        PROMPTS,
        padding="max_length",
        max_length=length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    return encoded.input_ids


def test_pixart_reload_is_bit_identical(tiny_pixart_pipe: PixArtAlphaPipeline) -> None:
    reloaded = generate(tiny_pixart_pipe, TINY_PIXART_CALL_KWARGS)
    in_memory = generate(tiny_pixart_pipeline(seed=0), TINY_PIXART_CALL_KWARGS)
    assert reloaded.shape == (1, 3, TINY_PIXART_CALL_KWARGS["height"], TINY_PIXART_CALL_KWARGS["width"])
    assert torch.isfinite(reloaded).all()
    assert torch.equal(reloaded, in_memory)


def test_flux_reload_is_bit_identical(tiny_flux_pipe: FluxPipeline) -> None:
    call = {**TINY_FLUX_CALL_KWARGS, "guidance_scale": 3.5}
    reloaded = generate(tiny_flux_pipe, call)
    in_memory = generate(tiny_flux_pipeline(seed=0), call)
    assert reloaded.shape == (1, 3, TINY_FLUX_CALL_KWARGS["height"], TINY_FLUX_CALL_KWARGS["width"])
    assert torch.isfinite(reloaded).all()
    assert torch.equal(reloaded, in_memory)


def test_sigma_pipeline_saves_reloads_and_runs(tmp_path: Path) -> None:
    pipe = tiny_pixart_pipeline(seed=0, sigma=True)
    assert isinstance(pipe, PixArtSigmaPipeline)
    reloaded = PixArtSigmaPipeline.from_pretrained(save_tiny(pipe, tmp_path))
    assert torch.equal(generate(reloaded, TINY_PIXART_CALL_KWARGS), generate(pipe, TINY_PIXART_CALL_KWARGS))


def test_saved_folders_are_safetensors_only(tiny_pixart_dir: Path, tiny_flux_dir: Path) -> None:
    for folder in (tiny_pixart_dir, tiny_flux_dir):
        assert (folder / "model_index.json").is_file()
        assert list(folder.rglob("*.safetensors"))
        assert not list(folder.rglob("*.bin"))


@pytest.mark.parametrize(
    ("attribute", "length"),
    [("tokenizer", CLIP_TOKENS), ("tokenizer_2", TINY_FLUX_CALL_KWARGS["max_sequence_length"])],
)
def test_flux_tokenizers_reload_with_identical_ids(tiny_flux_pipe: FluxPipeline, attribute: str, length: int) -> None:
    original = getattr(tiny_flux_pipeline(seed=0), attribute)
    reloaded = getattr(tiny_flux_pipe, attribute)
    assert type(reloaded) is type(original)
    assert isinstance(reloaded, PreTrainedTokenizerFast)
    assert torch.equal(token_ids(reloaded, length), token_ids(original, length))


def test_pixart_tokenizer_reloads_with_identical_ids(tiny_pixart_pipe: PixArtAlphaPipeline) -> None:
    original = tiny_t5_tokenizer(model_max_length=TINY_PIXART_CALL_KWARGS["max_sequence_length"])
    assert type(tiny_pixart_pipe.tokenizer) is type(original)
    assert torch.equal(token_ids(tiny_pixart_pipe.tokenizer, 16), token_ids(original, 16))


def test_t5_tokenizer_behaves_like_t5() -> None:
    tokenizer = tiny_t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = token_ids(tokenizer, 6).tolist()

    def words(text: str) -> list[int]:
        return tokenizer.convert_tokens_to_ids(text.split())

    assert ids[0] == [*words("a red cat"), 1, 0, 0]
    assert ids[1] == [*words("a blue dog sitting on"), 1]  # lower-cased; truncation keeps `</s>` like T5
    assert ids[2] == [*words("an"), 2, 2, 2, 1, 0]  # "unknown", "zebra" and "!" are not in the vocabulary
    assert ids[3] == [1, 0, 0, 0, 0, 0]


def test_clip_tokenizer_wraps_and_pads_with_end_token() -> None:
    tokenizer = tiny_clip_tokenizer()
    ids = token_ids(tokenizer, CLIP_TOKENS)
    assert tokenizer.model_max_length == CLIP_TOKENS
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert ids[0, :5].tolist() == [bos, *tokenizer.convert_tokens_to_ids(["a", "red", "cat"]), eos]
    assert (ids[0, 5:] == eos).all()
    assert ids[3, :2].tolist() == [bos, eos]


@pytest.mark.parametrize("build", [tiny_pixart_pipeline, tiny_flux_pipeline])
def test_same_seed_gives_same_weights(build: Callable[..., DiffusionPipeline]) -> None:
    assert same_weights(build(seed=1), build(seed=1))
    assert not same_weights(build(seed=1), build(seed=2))


def test_other_sizes_run(tiny_pixart_pipe: PixArtAlphaPipeline, tiny_flux_pipe: FluxPipeline) -> None:
    pixart = generate(tiny_pixart_pipe, {**TINY_PIXART_CALL_KWARGS, "height": 32, "width": 24})
    flux = generate(tiny_flux_pipe, {**TINY_FLUX_CALL_KWARGS, "height": 16, "width": 48})
    assert pixart.shape == (1, 3, 32, 24)
    assert flux.shape == (1, 3, 16, 48)


def test_full_depth_preset() -> None:
    transformer = full_depth_tiny_pixart_pipeline(seed=0).transformer
    assert len(transformer.transformer_blocks) == FULL_DEPTH_TINY_PIXART["num_layers"] == 28
    assert transformer.config == tiny_width_pixart_transformer().config
    parameters = sum(p.numel() for p in transformer.parameters())
    assert abs(parameters - 1.9e6) <= 0.2 * 1.9e6


@pytest.mark.parametrize("folder", ["tiny_pixart_dir", "tiny_flux_dir"])
def test_an_evaluator_makes_several_images_per_prompt_as_the_pipeline_does(folder: str, request) -> None:  # type: ignore[no-untyped-def]
    # FluxPipeline repeats prompt embeddings only when it encodes them itself: the family repeats given ones.
    from ecad_search.evaluation import EvaluationSettings, Evaluator
    from ecad_search.models import get_model

    path = str(request.getfixturevalue(folder))
    spec = get_model(path)
    settings = EvaluationSettings(path, "fidelity", ("a red cat", "a blue house"), 2, 4, spec.guidance_scale, 16)
    evaluator = Evaluator(spec, settings)
    references = evaluator.references
    assert references is not None and references.shape[0] == 4
    assert not torch.equal(references[0], references[1]), "two seeds of one prompt differ"
    kwargs = {k: v for k, v in evaluator.call_kwargs.items() if k != "generator"}
    direct = evaluator.pipe(
        "a blue house", generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs
    ).images[0]
    assert torch.allclose(direct, references[3], atol=1e-5), "prompt 2, seed 1: the same image as a plain call"
