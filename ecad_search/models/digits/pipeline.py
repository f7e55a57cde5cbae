"""The digits pipeline and its text encoder: diffusers classes, imported only when a digits model is loaded."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
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

from .prompts import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DEFAULT_TEXT_TOKENS,
    NO_MICRO_CONDITIONS,
    NUM_DIGITS,
    parse_digit_prompt,
)


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
