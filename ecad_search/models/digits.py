"""The bundled "digits" model: a small class-conditional PixArt-α transformer trained on sklearn's 8×8 digits.

It is built from the same diffusers classes as PixArt-α (`PixArtTransformer2DModel` with `ada_norm_single`
blocks, each with attn1 / attn2 / ff), so every cache schedule, runtime hook and cost formula written for
PixArt applies to it unchanged, yet it trains in minutes on a laptop CPU and ships in the package. That makes
it the default for the quick start, the demo and the tests of search quality.

It works in pixel space (no VAE): one channel, patch size 1, 8×8 = 64 tokens. Text prompts name a digit; the
`DigitsTextEncoder` maps the digit (or the null class used for classifier-free guidance) to a few learned
caption-embedding tokens that the transformer's caption projection and cross-attention consume exactly like
PixArt's T5 embeddings.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, PixArtTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ecad_search.models.base import ModelFamily, ModelNotAvailableError, ModelSpec, first_line

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "digits"
NUM_DIGITS = 10
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25
DEFAULT_TEXT_TOKENS = 4
# One resolution, so PixArt's resolution / aspect-ratio micro-conditions are off.
NO_MICRO_CONDITIONS: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
DIGIT_PROMPTS = [f"a handwritten digit {digit}" for digit in range(NUM_DIGITS)]

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_PATTERN = re.compile(r"(?<![0-9a-z])(" + "|".join(_NUMBER_WORDS) + r"|[0-9])(?![0-9a-z])")
_PROMPT_EXAMPLE = '"a handwritten digit 7" or "seven"'


def parse_digit_prompt(prompt: str) -> int:
    """The digit a prompt names, as a figure or a number word anywhere in the sentence (case-insensitive).

    A prompt naming no digit, or two different ones, is refused rather than guessed, so a typo in a
    calibration file fails loudly instead of silently training a schedule on the wrong class.
    """
    found = {_digit_value(match) for match in _DIGIT_PATTERN.findall(prompt.lower())}
    if not found:
        raise ValueError(f"prompt {prompt!r} names no digit; write one digit 0-9, e.g. {_PROMPT_EXAMPLE}")
    if len(found) > 1:
        names = ", ".join(str(digit) for digit in sorted(found))
        raise ValueError(f"prompt {prompt!r} names several digits ({names}); name one, e.g. {_PROMPT_EXAMPLE}")
    return found.pop()


def _digit_value(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS.index(token)


def default_transformer_config(
    width: int = 128, depth: int = 6, head_dim: int = 32, caption_channels: int = 64
) -> dict[str, Any]:
    """Architecture of the digits denoiser: PixArt-α's block structure at toy scale, in pixel space.

    `out_channels=1` because the model predicts epsilon only (no learned variance, unlike PixArt-α's 8
    channels), and `use_additional_conditions=False` because there is a single resolution.
    """
    if width % head_dim:
        raise ValueError(f"width {width} is not a multiple of head_dim {head_dim}; e.g. width=128, head_dim=32")
    return {
        "num_attention_heads": width // head_dim,
        "attention_head_dim": head_dim,
        "in_channels": 1,
        "out_channels": 1,
        "num_layers": depth,
        "cross_attention_dim": width,
        "sample_size": 8,
        "patch_size": 1,
        "norm_type": "ada_norm_single",
        "num_embeds_ada_norm": 1000,
        "use_additional_conditions": False,
        "caption_channels": caption_channels,
        "interpolation_scale": 1,
    }


class DigitsTextEncoder(ModelMixin, ConfigMixin):
    """Caption embeddings for digit prompts: one learned table of `text_tokens` vectors per class.

    Index `num_classes` is the null class, the analogue of PixArt's empty-prompt embedding, used for the
    unconditional half of classifier-free guidance. Several tokens (not one) keep cross-attention meaningful:
    with a single key the attention weights are all 1 and attn2 would not depend on its queries.
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = NUM_DIGITS,
        text_tokens: int = DEFAULT_TEXT_TOKENS,
        caption_channels: int = 64,
    ):
        super().__init__()
        self.embedding = nn.Embedding(num_classes + 1, text_tokens * caption_channels)

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Caption embeddings (B, text_tokens, caption_channels) for class labels (B,)."""
        embeds = self.embedding(labels)
        return embeds.view(labels.shape[0], self.config.text_tokens, self.config.caption_channels)


class DigitsPipeline(DiffusionPipeline):
    """Text-to-digit generation with the same call pattern as `PixArtAlphaPipeline`.

    The denoising loop matches PixArt's in what cache runtimes rely on: `set_timesteps` once per call, one
    transformer call per step, and with guidance > 1 the `[uncond, cond]` pair in one batched call.
    """

    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(
        self,
        transformer: PixArtTransformer2DModel,
        text_encoder: DigitsTextEncoder,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)

    def encode_prompt(
        self, prompt: str | list[str], num_images_per_prompt: int = 1, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, negative_prompt_embeds), each repeated `num_images_per_prompt` times per prompt."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = device or self._execution_device
        labels = torch.tensor([parse_digit_prompt(text) for text in prompts], device=device)
        labels = labels.repeat_interleave(num_images_per_prompt)
        prompt_embeds = self.text_encoder(labels)
        negative_prompt_embeds = self.text_encoder(torch.full_like(labels, self.text_encoder.null_label))
        return prompt_embeds, negative_prompt_embeds

    def _embeddings(
        self,
        prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings from the prompt, or the caller's precomputed ones repeated like PixArt repeats them."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`, e.g. prompt='a handwritten digit 7'")
        if prompt_embeds is None:
            return self.encode_prompt(prompt, num_images_per_prompt, device)
        prompt_embeds = prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
        if negative_prompt_embeds is None:
            null = torch.full((prompt_embeds.shape[0],), self.text_encoder.null_label, device=device)
            return prompt_embeds, self.text_encoder(null)
        return prompt_embeds, negative_prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)

    def _step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict[str, Any]:
        """Pass the generator to schedulers whose step is stochastic, as PixArt does."""
        accepted = inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if "generator" in accepted else {}

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate digits; `output_type` "pil" (8×8 grayscale images), "pt" (B,1,8,8) or "np" (B,8,8,1)."""
        if output_type not in ("pil", "pt", "np"):
            raise ValueError(f"output_type {output_type!r} is not supported; use 'pil', 'pt' or 'np'")
        device = self._execution_device
        dtype = self.transformer.dtype
        cond, uncond = self._embeddings(prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt, device)
        do_cfg = guidance_scale > 1.0
        encoder_hidden_states = (torch.cat([uncond, cond]) if do_cfg else cond).to(dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        config = self.transformer.config
        shape = (cond.shape[0], config.in_channels, config.sample_size, config.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator)

        with self.progress_bar(total=len(self.scheduler.timesteps)) as progress_bar:
            for t in self.scheduler.timesteps:
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.transformer(
                    hidden_states=model_input,
                    encoder_hidden_states=encoder_hidden_states,
                    timestep=t.reshape(1).to(device).expand(model_input.shape[0]),
                    added_cond_kwargs=dict(NO_MICRO_CONDITIONS),
                    return_dict=False,
                )[0]
                if do_cfg:
                    noise_uncond, noise_cond = noise_pred.chunk(2)
                    noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                progress_bar.update()

        images = _to_output((latents / 2 + 0.5).clamp(0, 1).float(), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def _to_output(images: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray | list[PIL.Image.Image]:
    """Convert a (B,1,H,W) batch in [0,1] to the requested output type."""
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    return [PIL.Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), mode="L") for image in array]


def upscale(images: Sequence[PIL.Image.Image], factor: int) -> list[PIL.Image.Image]:
    """Nearest-neighbour enlargement, so 8×8 digits stay crisp (not blurred) when saved as PNG or shown."""
    return [image.resize((image.width * factor, image.height * factor), PIL.Image.NEAREST) for image in images]


def digit_grid(
    images: Sequence[PIL.Image.Image], columns: int = NUM_DIGITS, factor: int = 4, padding: int = 2
) -> PIL.Image.Image:
    """Lay images out row by row on a black canvas, e.g. one row of `pipe(DIGIT_PROMPTS).images`."""
    if not images:
        raise ValueError("digit_grid needs at least one image, e.g. pipe(DIGIT_PROMPTS).images")
    tiles = upscale(images, factor)
    tile_w, tile_h = tiles[0].size
    rows = math.ceil(len(tiles) / columns)
    width = min(columns, len(tiles)) * (tile_w + padding) + padding
    grid = PIL.Image.new("L", (width, rows * (tile_h + padding) + padding))
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid.paste(tile, (padding + column * (tile_w + padding), padding + row * (tile_h + padding)))
    return grid


class DigitsFamily(ModelFamily):
    """The digits model: PixArt-α transformer, pixel-space inputs, pipeline loaded from a local folder."""

    name = "digits"
    pipeline_classes = ("DigitsPipeline",)
    default_text_tokens = DEFAULT_TEXT_TOKENS

    def transformer_class(self) -> type[torch.nn.Module]:
        return PixArtTransformer2DModel

    def transformer_inputs(
        self,
        config: dict[str, Any],
        *,
        height: int,
        width: int,
        batch_size: int,
        text_tokens: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Any]:
        """Inputs drawn on the CPU from a fixed seed, then moved, so they are reproducible on any device."""
        generator = torch.Generator().manual_seed(0)
        hidden = torch.randn(batch_size, config["in_channels"], height, width, generator=generator)
        text = torch.randn(batch_size, text_tokens, config["caption_channels"], generator=generator)
        timestep = torch.randint(0, config["num_embeds_ada_norm"], (batch_size,), generator=generator)
        return {
            "hidden_states": hidden.to(device, dtype),
            "encoder_hidden_states": text.to(device, dtype),
            "timestep": timestep.to(device),
            "added_cond_kwargs": dict(NO_MICRO_CONDITIONS),
        }

    def load_pipeline(
        self,
        spec: ModelSpec,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        local_files_only: bool = False,
    ) -> DigitsPipeline:
        """Load from `spec.pipeline_id` (a folder) or the bundled weights; never touches the network."""
        folder = Path(spec.pipeline_id) if spec.pipeline_id else ASSETS_DIR
        if not (folder / "model_index.json").is_file():
            raise ModelNotAvailableError(
                f"no digits pipeline in {folder}; rebuild it with `python scripts/train_digits.py --output {folder}`"
            )
        try:
            pipe = DigitsPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype or spec.torch_dtype)
        except (OSError, ValueError) as err:
            raise ModelNotAvailableError(f"cannot load the digits pipeline in {folder}: {first_line(err)}") from err
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)


def _shipped_config(component: str, default: dict[str, Any]) -> dict[str, Any]:
    """The bundled component config, so the registry entry always describes the weights that ship.

    Falls back to the training defaults only when the assets are absent (before the first training run);
    loading the pipeline then fails with `ModelNotAvailableError`.
    """
    path = ASSETS_DIR / component / "config.json"
    if not path.is_file():
        return default
    return {key: value for key, value in json.loads(path.read_text()).items() if not key.startswith("_")}


FAMILY = DigitsFamily()
SPEC = ModelSpec(
    name="digits",
    family="digits",
    description="Bundled class-conditional PixArt-α-architecture model of sklearn's 8×8 handwritten digits",
    transformer_config=_shipped_config("transformer", default_transformer_config()),
    text_tokens=_shipped_config("text_encoder", {"text_tokens": DEFAULT_TEXT_TOKENS})["text_tokens"],
    default_steps=DEFAULT_STEPS,
    resolution=8,
    guidance_scale=DEFAULT_GUIDANCE,
    dtype="float32",
    cfg_batch=True,
    vae_scale_factor=1,
    pipeline_class="DigitsPipeline",
    how_to_get="bundled in ecad_search/assets/digits; rebuild with `python scripts/train_digits.py`",
)
SPECS = (SPEC,)
