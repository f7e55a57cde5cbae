"""The bundled digits model: prompt parsing, deterministic training, loading, PixArt call pattern, quality."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import PixArtTransformer2DModel
from safetensors.torch import load_file

from ecad_search.metrics.reward import digit_accuracy, load_digit_classifier
from ecad_search.models import get_model
from ecad_search.models.base import ModelNotAvailableError, ModelSpec
from ecad_search.models.digits import (
    ASSETS_ROOT,
    DEEP_SPEC,
    DEFAULT_GUIDANCE,
    DIGIT_PROMPTS,
    FAMILY,
    NUM_DIGITS,
    SPEC,
    DigitsPipeline,
    digit_grid,
    parse_digit_prompt,
    upscale,
)
from ecad_search.models.digits import train as train_digits

TINY = train_digits.TrainConfig(
    steps=3, batch_size=8, width=32, depth=2, head_dim=16, classifier_epochs=1, eval_per_digit=0
)
WEIGHT_FILES = (
    "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder/diffusion_pytorch_model.safetensors",
    "classifier/model.safetensors",
)


@pytest.mark.parametrize(
    ("prompt", "digit"),
    [
        ("a handwritten digit 7", 7),
        ("seven", 7),
        ("7", 7),
        ("Digit 7", 7),
        ("SEVEN", 7),
        ("the number zero, written by hand", 0),
        ("Draw a Nine, please.", 9),
        ("4 (four)", 4),
        ("digit:3", 3),
    ],
)
def test_parse_digit_prompt_accepts_figures_and_words(prompt: str, digit: int) -> None:
    assert parse_digit_prompt(prompt) == digit


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [("a handwritten digit", "names no digit"), ("someone", "names no digit"), ("10", "names no digit")],
)
def test_parse_digit_prompt_rejects_prompts_without_a_digit(prompt: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_digit_prompt(prompt)
    assert "\n" not in str(info.value) and "e.g." in str(info.value)


def test_parse_digit_prompt_rejects_two_different_digits() -> None:
    with pytest.raises(ValueError, match=r"several digits \(3, 4\)"):
        parse_digit_prompt("3 or four")


def test_calibration_prompts_each_name_one_digit_and_cover_all() -> None:
    path = Path(__file__).resolve().parents[2] / "calibration_prompts" / "digits.txt"
    prompts = path.read_text().splitlines()
    digits = [parse_digit_prompt(prompt) for prompt in prompts]
    assert sorted(set(digits)) == list(range(NUM_DIGITS))
    assert all(digits.count(digit) == digits.count(0) for digit in range(NUM_DIGITS))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny training run twice, with the same seed, into two folders."""
    folders = tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")
    for folder in folders:
        train_digits.train(TINY, folder, log=lambda _: None)
    return folders


def test_training_with_one_seed_is_reproducible(tiny_runs: tuple[Path, Path]) -> None:
    first, second = tiny_runs
    for name in WEIGHT_FILES:
        weights_a, weights_b = load_file(first / name), load_file(second / name)
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a), name
    record = json.loads((first / "training.json").read_text())
    assert record["config"]["seed"] == TINY.seed and record["config"]["steps"] == TINY.steps
    assert record["denoiser"]["final_loss"] > 0


def test_a_stopped_training_resumes_bit_identical(tmp_path: Path) -> None:
    config = replace(TINY, steps=12, log_every=4, checkpoint_every=4)
    uninterrupted, _ = train_digits.train_denoiser(config, log=lambda _: None)

    def stop_at_step_8(message: str) -> None:
        if message.startswith("step 8/"):
            raise KeyboardInterrupt

    checkpoint = tmp_path / "run.checkpoint"
    with pytest.raises(KeyboardInterrupt):
        train_digits.train_denoiser(config, log=stop_at_step_8, checkpoint=checkpoint)
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 4, "the stop came before step 8 was saved"
    messages: list[str] = []
    resumed, _ = train_digits.train_denoiser(config, log=messages.append, checkpoint=checkpoint)
    assert messages[0] == f"resuming from step 4 (checkpoint in {checkpoint})"
    expected = uninterrupted.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in resumed.state_dict().items())
    with pytest.raises(SystemExit, match=r"for other options .*learning_rate"):
        train_digits.train_denoiser(replace(config, learning_rate=0.5), checkpoint=checkpoint)


def test_a_different_seed_gives_different_weights(tiny_runs: tuple[Path, Path], tmp_path: Path) -> None:
    train_digits.train(replace(TINY, seed=1), tmp_path, log=lambda _: None)
    name = WEIGHT_FILES[0]
    other, base = load_file(tmp_path / name), load_file(tiny_runs[0] / name)
    assert not all(torch.equal(other[key], base[key]) for key in base)


def test_half_precision_weights_are_the_rounded_weights_and_load_as_float32(
    tiny_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    train_digits.train(replace(TINY, weights_dtype="float16"), tmp_path, log=lambda _: None)
    half, full = (load_file(folder / WEIGHT_FILES[0]) for folder in (tmp_path, tiny_runs[0]))
    assert all(half[key].dtype == torch.float16 and torch.equal(half[key], full[key].half()) for key in full)
    loaded = FAMILY.load_pipeline(replace(SPEC, pipeline_id=str(tmp_path))).transformer.state_dict()
    assert all(torch.equal(loaded[key], half[key].float()) for key in half)


@pytest.fixture
def tiny_pipe(tiny_runs: tuple[Path, Path]) -> DigitsPipeline:
    """The tiny trained model, loaded through the registry family like any digits model."""
    return FAMILY.load_pipeline(replace(SPEC, pipeline_id=str(tiny_runs[0])))


def test_saved_folder_loads_through_the_family_and_generates(tiny_pipe: DigitsPipeline) -> None:
    assert isinstance(tiny_pipe.transformer, PixArtTransformer2DModel)
    assert tiny_pipe.transformer.config.num_layers == TINY.depth
    images = tiny_pipe(["seven", "3"], num_inference_steps=4, output_type="pt").images
    assert images.shape == (2, 1, 8, 8)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_missing_folder_raises_model_not_available(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match=r"ecad_search\.models\.digits\.train"):
        FAMILY.load_pipeline(replace(SPEC, pipeline_id=str(tmp_path / "absent")))


def _record_calls(pipe: DigitsPipeline) -> tuple[list[dict], list[int]]:
    """Record every transformer call's kwargs and count `set_timesteps` calls."""
    calls: list[dict] = []
    set_timesteps: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs), with_kwargs=True)
    original = pipe.scheduler.set_timesteps

    def counting(*args, **kwargs):
        set_timesteps.append(1)
        return original(*args, **kwargs)

    pipe.scheduler.set_timesteps = counting
    return calls, set_timesteps


def test_guided_call_makes_one_batched_uncond_cond_transformer_call_per_step(tiny_pipe: DigitsPipeline) -> None:
    calls, set_timesteps = _record_calls(tiny_pipe)
    prompts = ["a handwritten digit 2", "five"]
    tiny_pipe(prompts, num_inference_steps=5, guidance_scale=3.0, num_images_per_prompt=2)
    assert len(set_timesteps) == 1
    assert len(calls) == 5
    cond, uncond = tiny_pipe.encode_prompt(prompts, num_images_per_prompt=2)
    for kwargs in calls:
        assert kwargs["hidden_states"].shape == (8, 1, 8, 8)
        assert torch.equal(kwargs["encoder_hidden_states"], torch.cat([uncond, cond]))
        assert kwargs["timestep"].shape == (8,)
        assert kwargs["added_cond_kwargs"] == {"resolution": None, "aspect_ratio": None}
        assert kwargs["return_dict"] is False
    timesteps = [int(kwargs["timestep"][0]) for kwargs in calls]
    assert timesteps == sorted(timesteps, reverse=True) and timesteps[0] == 999


def test_unguided_call_sends_only_the_conditional_batch(tiny_pipe: DigitsPipeline) -> None:
    calls, set_timesteps = _record_calls(tiny_pipe)
    tiny_pipe("seven", num_inference_steps=3, guidance_scale=1.0)
    assert len(set_timesteps) == 1 and len(calls) == 3
    assert all(kwargs["hidden_states"].shape == (1, 1, 8, 8) for kwargs in calls)


def test_precomputed_embeddings_reproduce_the_prompt_call(tiny_pipe: DigitsPipeline) -> None:
    prompt_embeds, negative_embeds = tiny_pipe.encode_prompt(["one", "9"])
    from_prompt = tiny_pipe(
        ["one", "9"], num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="pt"
    ).images
    from_embeds = tiny_pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(5),
        output_type="pt",
    ).images
    assert torch.equal(from_prompt, from_embeds)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_pipe(num_inference_steps=3)


def test_output_types(tiny_pipe: DigitsPipeline) -> None:
    def generate(output_type: str):
        generator = torch.Generator().manual_seed(0)
        return tiny_pipe(["0", "1", "2"], num_inference_steps=3, generator=generator, output_type=output_type)

    tensor = generate("pt").images
    array = generate("np").images
    pil = generate("pil").images
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 1, 8, 8)
    assert isinstance(array, np.ndarray) and array.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(array, tensor.permute(0, 2, 3, 1).numpy())
    assert len(pil) == 3 and all(image.mode == "L" and image.size == (8, 8) for image in pil)
    np.testing.assert_allclose(np.asarray(pil[0]) / 255, array[0, ..., 0], atol=0.5 / 255 + 1e-6)
    assert generate("pt").images.equal(tensor)
    with pytest.raises(ValueError, match="output_type"):
        generate("latent")


def test_upscale_and_grid_sizes() -> None:
    images = [PIL.Image.new("L", (8, 8), color=digit * 20) for digit in range(NUM_DIGITS)]
    big = upscale(images[:2], 4)
    assert [image.size for image in big] == [(32, 32), (32, 32)]
    assert np.asarray(big[1]).min() == np.asarray(big[1]).max() == 20
    grid = digit_grid(images, factor=4, padding=2)
    assert grid.size == (10 * 34 + 2, 34 + 2)
    assert grid.getpixel((2 + 9 * 34, 2)) == 180


def test_transformer_inputs_drive_one_forward_on_cpu_and_meta() -> None:
    kwargs = FAMILY.transformer_inputs(
        SPEC.transformer_config, height=8, width=8, batch_size=3, text_tokens=SPEC.text_tokens
    )
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel.from_config(SPEC.transformer_config)
    assert transformer(**kwargs, return_dict=False)[0].shape == (3, 1, 8, 8)
    with torch.device("meta"):
        meta_model = PixArtTransformer2DModel.from_config(SPEC.transformer_config)
    meta_kwargs = FAMILY.transformer_inputs(
        SPEC.transformer_config, height=8, width=8, batch_size=2, text_tokens=4, device="meta"
    )
    assert meta_model(**meta_kwargs, return_dict=False)[0].shape == (2, 1, 8, 8)


@pytest.mark.parametrize(("spec", "depth"), [(SPEC, 6), (DEEP_SPEC, 28)])
def test_registry_entries_match_the_shipped_files(spec: ModelSpec, depth: int) -> None:
    folder = ASSETS_ROOT / spec.name
    shipped = json.loads((folder / "transformer" / "config.json").read_text())
    assert {key: shipped[key] for key in spec.transformer_config} == spec.transformer_config
    assert spec.transformer_config["num_layers"] == depth and spec.transformer_config["patch_size"] == 1
    assert spec.text_tokens == json.loads((folder / "text_encoder" / "config.json").read_text())["text_tokens"]
    record = json.loads((folder / "training.json").read_text())
    assert record["chosen_guidance"] == DEFAULT_GUIDANCE == spec.guidance_scale
    assert record["config"]["depth"] == depth
    assert get_model(spec.name) is spec


@pytest.mark.parametrize("spec", [SPEC, DEEP_SPEC])
def test_shipped_models_draw_the_prompted_digit(spec: ModelSpec) -> None:
    """100 samples (10 per digit) at the default guidance: a fast stand-in for the 500-sample evaluation."""
    pipe = FAMILY.load_pipeline(spec)
    assert pipe.transformer.dtype == torch.float32, "half-precision weights load as float32"
    images = pipe(
        DIGIT_PROMPTS, num_images_per_prompt=10, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    labels = torch.arange(NUM_DIGITS).repeat_interleave(10)
    assert digit_accuracy(load_digit_classifier(), images, labels) >= 0.9
