"""FLUX.1-dev: 19 double-stream blocks (joint attention, image FF, text FF) then 38 single-stream blocks.

FLUX.1-dev is guidance-distilled: one transformer call per step, guidance enters as an embedding, so the
transformer batch is one row per image. Its pipeline opens a diffusers cache context around each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..schedule import BlockGroup
from .base import ModelFamily, ModelSpec
from .blocks import block_metadata

if TYPE_CHECKING:
    import torch

_ARCHITECTURE: dict[str, Any] = {
    "_class_name": "FluxTransformer2DModel",
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 19,
    "num_single_layers": 38,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}


class FluxFamily(ModelFamily):
    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    text_encoders = ("text_encoder", "text_encoder_2")
    default_text_tokens = 512
    latent_packing = 2

    def transformer_class(self) -> type[torch.nn.Module]:
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel

    def block_groups(self, config: dict[str, Any]) -> tuple[BlockGroup, ...]:
        """Double-stream blocks (joint attention, image FF, text FF), then single-stream blocks; the defaults
        are FluxTransformer2DModel's. The last double block has no text FF output that anything reads, but
        diffusers builds it, so it is scheduled like the others."""
        double, single = block_metadata("FluxTransformerBlock"), block_metadata("FluxSingleTransformerBlock")
        groups = (
            BlockGroup("transformer_blocks", int(config.get("num_layers", 19)), double.components),
            BlockGroup("single_transformer_blocks", int(config.get("num_single_layers", 38)), single.components),
        )
        return tuple(group for group in groups if group.num_blocks > 0)

    def noise_positions(self, spec: ModelSpec, scheduler: Any, steps: int) -> list[float]:
        """FluxPipeline's timesteps: σ from 1 to 1/steps, shifted by the image's token count (`mu`)."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        tokens = (spec.resolution // self.token_pixels(spec)) ** 2
        config = scheduler.config
        mu = calculate_shift(
            tokens,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=mu)
        return [float(t) for t in scheduler.timesteps]

    def transformer_inputs(
        self,
        config: dict[str, Any],
        *,
        height: int,
        width: int,
        batch_size: int,
        text_tokens: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> dict[str, Any]:
        """Latents are packed 2×2, so the image sequence has (height/2)·(width/2) tokens."""
        import torch

        dtype = dtype or torch.float32
        image_tokens = (height // 2) * (width // 2)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=device, dtype=dtype)

        inputs = {
            "hidden_states": randn(batch_size, image_tokens, config["in_channels"]),
            "encoder_hidden_states": randn(batch_size, text_tokens, config["joint_attention_dim"]),
            "pooled_projections": randn(batch_size, config["pooled_projection_dim"]),
            "timestep": torch.full((batch_size,), 0.5, device=device, dtype=dtype),
            "img_ids": torch.zeros(image_tokens, 3, device=device, dtype=dtype),
            "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=dtype),
        }
        if config.get("guidance_embeds"):
            inputs["guidance"] = torch.full((batch_size,), 3.5, device=device, dtype=dtype)
        return inputs

    def encode_prompts(self, pipe: Any, spec: ModelSpec, prompts: list[str], guidance_scale: float) -> dict[str, Any]:
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=pipe._execution_device, max_sequence_length=spec.text_tokens
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def call_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        return {"max_sequence_length": spec.text_tokens, **spec.pipeline_kwargs}

    def images_of(self, encoded: dict[str, Any], images_per_prompt: int) -> dict[str, Any]:
        """FluxPipeline repeats embeddings only when it encodes them itself: given ones are repeated here, each
        prompt's images next to each other, and the call asks for one image per row."""
        repeated = {name: value.repeat_interleave(images_per_prompt, dim=0) for name, value in encoded.items()}
        return {**repeated, "num_images_per_prompt": 1}


FAMILY = FluxFamily()

FLUX_DEV = ModelSpec(
    name="flux-dev",
    family="flux",
    description="FLUX.1-dev: 19 double + 38 single blocks, gated",
    transformer_config=_ARCHITECTURE,
    text_tokens=512,
    default_steps=20,
    resolution=256,
    guidance_scale=5.0,
    dtype="bfloat16",
    cfg_batch=False,
    pipeline_id="black-forest-labs/FLUX.1-dev",
    pipeline_class="FluxPipeline",
    held_out_images_per_prompt=2,
)

SPECS = (FLUX_DEV,)
