"""PixArt-α and PixArt-Σ: 28 `BasicTransformerBlock`s with self-attention, cross-attention and feed-forward.

The 256 and 512 px checkpoints hold only a transformer; the text encoder, VAE and scheduler come from the
1024 px pipeline repository. The pipeline runs the guidance pair as one batched transformer call per step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..schedule import BlockGroup
from .base import ModelFamily, ModelSpec
from .blocks import block_metadata

if TYPE_CHECKING:
    import torch

_ARCHITECTURE: dict[str, Any] = {
    "_class_name": "PixArtTransformer2DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 32,
}

ALPHA_TRANSFORMERS = {
    256: "PixArt-alpha/PixArt-XL-2-256x256",
    512: "PixArt-alpha/PixArt-XL-2-512x512",
    1024: "PixArt-alpha/PixArt-XL-2-1024-MS",
}
SIGMA_TRANSFORMERS = {
    256: "PixArt-alpha/PixArt-Sigma-XL-2-256x256",
    512: "PixArt-alpha/PixArt-Sigma-XL-2-512-MS",
    1024: "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
}
BINNED_SAMPLE_SIZES = (32, 64, 128, 256)


class PixArtFamily(ModelFamily):
    name = "pixart"
    pipeline_classes = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    text_encoders = ("text_encoder",)
    default_text_tokens = 120

    def transformer_class(self) -> type[torch.nn.Module]:
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel

    def block_groups(self, config: dict[str, Any]) -> tuple[BlockGroup, ...]:
        return pixart_block_groups(config)

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
        import torch

        dtype = dtype or torch.float32

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=device, dtype=dtype)

        additional = config.get("use_additional_conditions")
        if additional is None:
            additional = config.get("sample_size") == 128
        conditions: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if additional:
            pixels = torch.tensor([[height * 8.0, width * 8.0]], device=device, dtype=dtype)
            conditions = {
                "resolution": pixels.repeat(batch_size, 1),
                "aspect_ratio": torch.full((batch_size, 1), height / width, device=device, dtype=dtype),
            }
        return {
            "hidden_states": randn(batch_size, config["in_channels"], height, width),
            "encoder_hidden_states": randn(batch_size, text_tokens, config["caption_channels"]),
            "timestep": torch.full((batch_size,), 500, device=device, dtype=torch.long),
            "added_cond_kwargs": conditions,
        }

    def encode_prompts(self, pipe: Any, spec: ModelSpec, prompts: list[str], guidance_scale: float) -> dict[str, Any]:
        embeds, mask, negative, negative_mask = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=guidance_scale > 1.0,
            device=pipe._execution_device,
            clean_caption=True,
            max_sequence_length=spec.text_tokens,
        )
        return {
            "prompt_embeds": embeds,
            "prompt_attention_mask": mask,
            "negative_prompt": None,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": negative_mask,
        }

    def call_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """Resolution binning only exists for the real sample sizes; the T5 length is the model's."""
        binning = spec.transformer_config.get("sample_size") in BINNED_SAMPLE_SIZES
        return {
            "use_resolution_binning": binning,
            "max_sequence_length": spec.text_tokens,
            **spec.pipeline_kwargs,
        }


FAMILY = PixArtFamily()


def pixart_block_groups(config: dict[str, Any]) -> tuple[BlockGroup, ...]:
    """`transformer_blocks`: `num_layers` BasicTransformerBlocks, with cross-attention unless the config drops it
    (the defaults are PixArtTransformer2DModel's)."""
    block = block_metadata("BasicTransformerBlock")
    components = block.without() if config.get("cross_attention_dim", 1152) is not None else block.without("attn2")
    return (BlockGroup("transformer_blocks", int(config.get("num_layers", 28)), components),)


def at_resolution(spec: ModelSpec, resolution: int) -> ModelSpec:
    """The same PixArt model at another of its published resolutions (its own transformer checkpoint)."""
    table = SIGMA_TRANSFORMERS if spec.pipeline_class == "PixArtSigmaPipeline" else ALPHA_TRANSFORMERS
    if resolution not in table:
        raise ValueError(f"{spec.name} has checkpoints at {sorted(table)} px, not {resolution}; pick one of those")
    config = {**spec.transformer_config, "sample_size": resolution // 8}
    return replace(spec, resolution=resolution, transformer_id=table[resolution], transformer_config=config)


PIXART_ALPHA = ModelSpec(
    name="pixart-alpha",
    family="pixart",
    description="PixArt-α XL-2: 28 blocks, T5-XXL",
    transformer_config=_ARCHITECTURE,
    text_tokens=120,
    default_steps=20,
    resolution=256,
    guidance_scale=4.5,
    dtype="float16",
    cfg_batch=True,
    transformer_id=ALPHA_TRANSFORMERS[256],
    pipeline_id="PixArt-alpha/PixArt-XL-2-1024-MS",
    pipeline_class="PixArtAlphaPipeline",
    resolutions=tuple(ALPHA_TRANSFORMERS),
    held_out_images_per_prompt=2,
)

PIXART_SIGMA = replace(
    PIXART_ALPHA,
    name="pixart-sigma",
    description="PixArt-Σ XL-2: 28 blocks, T5-XXL",
    text_tokens=300,
    transformer_id=SIGMA_TRANSFORMERS[256],
    pipeline_id="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
    pipeline_class="PixArtSigmaPipeline",
    resolutions=tuple(SIGMA_TRANSFORMERS),
)

SPECS = (PIXART_ALPHA, PIXART_SIGMA)
