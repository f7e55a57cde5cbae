"""The bundled "digits" model: a small class-conditional PixArt-α transformer trained on sklearn's 8×8 digits.

It is built from the same diffusers classes as PixArt-α (`PixArtTransformer2DModel` with `ada_norm_single`
blocks, each with attn1 / attn2 / ff), so every cache schedule, runtime hook and cost formula written for
PixArt applies to it unchanged, yet it trains in minutes on a laptop CPU and ships in the package. That makes
it the default for the quick start, the demo and the tests of search quality.

It works in pixel space (no VAE): one channel, patch size 1, 8×8 = 64 tokens. Text prompts name a digit; the
`DigitsTextEncoder` maps the digit (or the null class used for classifier-free guidance) to a few learned
caption-embedding tokens that the transformer's caption projection and cross-attention consume exactly like
PixArt's T5 embeddings.

This module is the registry entry and stays light (no torch, no diffusers); the pipeline, text encoder and
image helpers live in `pipeline.py` and are imported on first use. Saved digits pipelines name
`ecad_search.models.digits.DigitsTextEncoder`, which still resolves.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...schedule import BlockGroup
from ..base import ModelFamily, ModelNotAvailableError, ModelSpec, first_line
from ..pixart import pixart_block_groups
from .prompts import (  # noqa: F401  (the model's public names)
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DEFAULT_TEXT_TOKENS,
    DIGIT_PROMPTS,
    NO_MICRO_CONDITIONS,
    NUM_DIGITS,
    parse_digit_prompt,
)

if TYPE_CHECKING:
    import torch

    from .pipeline import DigitsPipeline

ASSETS_ROOT = Path(__file__).resolve().parents[2] / "assets"
ASSETS_DIR = ASSETS_ROOT / "digits"


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


def __getattr__(name: str) -> Any:
    """The heavy parts (pipeline, text encoder, image helpers), imported when first asked for.

    Any public name of `pipeline` resolves here: diffusers loads a saved pipeline's text encoder by looking up
    its class, and the base classes it checks against (`ModelMixin`, ...), in the module the folder names.
    """
    if name.startswith("__") or name == "pipeline":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    pipeline = importlib.import_module(f"{__name__}.pipeline")
    try:
        return getattr(pipeline, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


class DigitsFamily(ModelFamily):
    """The digits model: PixArt-α transformer, pixel-space inputs, pipeline loaded from a local folder."""

    name = "digits"
    pipeline_classes = ("DigitsPipeline",)
    default_text_tokens = DEFAULT_TEXT_TOKENS

    def transformer_class(self) -> type[torch.nn.Module]:
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel

    def block_groups(self, config: dict[str, Any]) -> tuple[BlockGroup, ...]:
        return pixart_block_groups(config)

    def conditioning_key(self, prompt: str) -> str:
        return str(parse_digit_prompt(prompt))

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
        """Inputs drawn on the CPU from a fixed seed, then moved, so they are reproducible on any device."""
        import torch

        dtype = dtype or torch.float32
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

    def judges(self, spec: ModelSpec, device: str = "cpu") -> list[Any]:
        """The judge network's adherence and second Fréchet judge (`judge.py`), shared by both digits models."""
        from .judge import digit_judges

        return digit_judges(device)

    def pipeline_folder(self, spec: ModelSpec) -> str:
        return spec.pipeline_id or str(ASSETS_ROOT / spec.name)

    def load_pipeline(
        self,
        spec: ModelSpec,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> DigitsPipeline:
        """Load from `spec.pipeline_id` (a folder) or the bundled weights; never touches the network."""
        from .pipeline import DigitsPipeline

        folder = Path(self.pipeline_folder(spec))
        if not (folder / "model_index.json").is_file():
            raise ModelNotAvailableError(
                f"no digits pipeline in {folder}; rebuild it with "
                f"`python -m ecad_search.models.digits.train --output {folder}`"
            )
        try:
            pipe = DigitsPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype or spec.torch_dtype)
        except (OSError, ValueError) as err:
            raise ModelNotAvailableError(f"cannot load the digits pipeline in {folder}: {first_line(err)}") from err
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)


def _shipped_config(name: str, component: str, default: dict[str, Any]) -> dict[str, Any]:
    """The bundled component config, so the registry entry always describes the weights that ship.

    Falls back to the training defaults only when the assets are absent (before the first training run);
    loading the pipeline then fails with `ModelNotAvailableError`.
    """
    path = ASSETS_ROOT / name / component / "config.json"
    if not path.is_file():
        return default
    return {key: value for key, value in json.loads(path.read_text()).items() if not key.startswith("_")}


FAMILY = DigitsFamily()


def _bundled_spec(name: str, description: str, training: str, defaults: dict[str, Any]) -> ModelSpec:
    """A digits model shipped under assets/<name>, described by its own configs."""
    return ModelSpec(
        name=name,
        family="digits",
        description=description,
        transformer_config=_shipped_config(name, "transformer", default_transformer_config(**defaults)),
        text_tokens=_shipped_config(name, "text_encoder", {"text_tokens": DEFAULT_TEXT_TOKENS})["text_tokens"],
        default_steps=DEFAULT_STEPS,
        resolution=8,
        guidance_scale=DEFAULT_GUIDANCE,
        dtype="float32",
        cfg_batch=True,
        vae_scale_factor=1,
        pipeline_class="DigitsPipeline",
        how_to_get=f"bundled in ecad_search/assets/{name}; rebuild with "
        f"`python -m ecad_search.models.digits.train{training}`",
        resolutions=(8,),
        calibration_images_per_prompt=8,
        held_out_images_per_prompt=100,
        metric="frechet",
        # Measured on the quick start's 1,000 held-out images (docs/research/digits.md): a quality search's
        # front is a trade-off against every baseline (6–13 dB of PSNR, 0.6–2.4 points of adherence lost, its
        # Fréchet lead unseen by the second judge); a fidelity search's holds in more families.
        objective="fidelity",
        guard="confirm",
        batch_size=100,
    )


SPEC = _bundled_spec("digits", "bundled: PixArt blocks on 8×8 digits", "", {})
DEEP_TRAINING = " --depth 28 --width 64 --head-dim 16 --weights-dtype float16 --output ecad_search/assets/digits-28"
DEEP_SPEC = _bundled_spec(
    "digits-28",
    "bundled: PixArt-α's 28 blocks on 8×8 digits",
    DEEP_TRAINING,
    {"depth": 28, "width": 64, "head_dim": 16},
)
SPECS = (SPEC, DEEP_SPEC)
