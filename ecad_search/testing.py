"""Tiny random-weight diffusers pipelines, built from configs with no download: for testing a stack that uses
schedules or policies (`apply_schedule`, `apply_policy`) in CI, where no weights can be fetched.

Tests and benchmarks need real, stock `PixArtAlphaPipeline` / `PixArtSigmaPipeline` / `FluxPipeline` objects
(the same classes, call paths, schedulers and `save_pretrained` layout as the hub checkpoints), but the real
weights are gigabytes and this code must run offline on a laptop CPU. Every component here is the stock
diffusers/transformers class, configured a few orders of magnitude smaller and initialised from
`torch.manual_seed(seed)` right before it is built, so the same seed always gives the same weights. The
tokenizers are word-level `tokenizers` models over a small English vocabulary, wrapped in
`PreTrainedTokenizerFast`, so they need no SentencePiece/BPE files either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

T = TypeVar("T")

_VOCABULARY = """
    a an the of and or with in on at under over near behind beside by to from for is are
    red orange yellow green blue purple pink brown black white gray grey golden silver dark bright
    cat dog bird fish horse cow sheep rabbit fox bear lion tiger owl duck frog butterfly
    man woman child person girl boy robot astronaut knight wizard
    house castle tree forest flower garden mountain river lake sea ocean beach sky cloud sun moon star
    city street car bike boat ship train road bridge tower window door table chair book cup
    photo painting drawing portrait landscape closeup sketch render
    small big large tiny old young happy sad cute beautiful detailed realistic
    sitting standing running flying swimming sleeping eating wearing holding looking
    hat coat dress shirt glasses night day morning evening sunset snow rain
"""

WORDS: tuple[str, ...] = tuple(_VOCABULARY.split())
"""Prompt vocabulary of the tiny tokenizers; any other word becomes the unknown token."""

T5_SPECIALS: tuple[str, str, str] = ("<pad>", "</s>", "<unk>")
"""T5's special tokens, at T5's ids (pad 0, eos 1, unk 2)."""

CLIP_SPECIALS: tuple[str, str, str] = ("<|startoftext|>", "<|endoftext|>", "<|unk|>")
"""CLIP's begin/end-of-text tokens (CLIP pads with its end token) and an unknown token."""

CLIP_TOKENS = 77
"""CLIP's context length, as in FLUX's `tokenizer/`; FLUX always pads the CLIP prompt to this."""

PIXART_VAE_BLOCKS: tuple[int, ...] = (8, 8)
"""VAE widths for PixArt: two blocks give a VAE scale factor of 2 (16×16 image -> 8×8 latent)."""

FLUX_VAE_BLOCKS: tuple[int, ...] = (8, 8)
"""VAE widths for FLUX: scale factor 2, and FLUX packs 2×2 latents, so sizes must be multiples of 4."""

FLUX_T5_WIDTH = 32
"""d_model of FLUX's tiny T5, hence the transformer's `joint_attention_dim`."""

FLUX_CLIP_WIDTH = 16
"""Hidden size of FLUX's tiny CLIP, hence the transformer's `pooled_projection_dim` (differs from T5's width,
so a mixup of the two encoders fails loudly)."""

FLUX_VAE_CONFIG: Mapping[str, Any] = MappingProxyType(
    dict(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
)
"""FLUX.1's VAE settings the pipeline reads: it decodes `latents / scaling_factor + shift_factor`."""

TINY_PIXART_CALL_KWARGS: Mapping[str, Any] = MappingProxyType(
    dict(height=16, width=16, use_resolution_binning=False, max_sequence_length=16, clean_caption=False)
)
"""What every call of a default `tiny_pixart_pipeline()` needs: an image of the transformer's native size
(sample_size 8 × VAE factor 2), no resolution binning (its tables only know sample sizes 32/64/128/256 and
raise "Invalid sample size"), the tiny T5 length, and no caption cleaning (it needs bs4 and ftfy; without
them the pipeline only warns and falls back to lower-casing, so the output is the same)."""

TINY_FLUX_CALL_KWARGS: Mapping[str, Any] = MappingProxyType(dict(height=32, width=32, max_sequence_length=16))
"""What every call of a default `tiny_flux_pipeline()` needs: 32×32 pixels are 16×16 latents, 8×8 = 64 packed
tokens (FLUX's default size would be 128 × VAE factor = 256 pixels), and the tiny T5 length."""

FULL_DEPTH_TINY_PIXART: Mapping[str, int] = MappingProxyType(
    dict(num_layers=28, num_attention_heads=4, attention_head_dim=16, caption_channels=64)
)
"""PixArt-α/Σ's depth (28 blocks) at width 64: about 1.9 M transformer parameters, so a runtime benchmark
sees the real number of blocks, and thus the real per-block overheads a cache schedule removes, in seconds."""


def _seeded(seed: int, build: Callable[[], T]) -> T:
    """Build one component right after seeding torch, so each component's weights depend only on `seed`."""
    torch.manual_seed(seed)
    return build()


def _word_level_tokenizer(
    specials: Sequence[str], *, prefix: str | None, suffix: str, pad: str, model_max_length: int
) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over `specials` + `WORDS`, adding `prefix`/`suffix` around text.

    The specials come first, so their ids are 0, 1, 2... like T5's. Text is lower-cased first, since the
    vocabulary is lower-case only (CLIP's tokenizer lower-cases too; the PixArt pipelines lower-case prompts).
    """
    vocab = {token: i for i, token in enumerate((*specials, *WORDS))}
    unk = specials[-1]
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    around = [prefix] if prefix else []
    backend.post_processor = processors.TemplateProcessing(
        single=" ".join([*around, "$A", suffix]),
        pair=" ".join([*around, "$A", suffix, "$B", suffix]),
        special_tokens=[(token, vocab[token]) for token in (*around, suffix)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=prefix,
        eos_token=suffix,
        pad_token=pad,
        unk_token=unk,
        model_max_length=model_max_length,
    )


def tiny_t5_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A T5-like tokenizer: ids pad 0, eos 1, unk 2; appends `</s>` to every text, pads with `<pad>`."""
    pad, eos, _ = T5_SPECIALS
    return _word_level_tokenizer(T5_SPECIALS, prefix=None, suffix=eos, pad=pad, model_max_length=model_max_length)


def tiny_clip_tokenizer(model_max_length: int = CLIP_TOKENS) -> PreTrainedTokenizerFast:
    """A CLIP-like tokenizer: wraps text in start/end tokens and pads with the end token, like CLIP's."""
    bos, eos, _ = CLIP_SPECIALS
    return _word_level_tokenizer(CLIP_SPECIALS, prefix=bos, suffix=eos, pad=eos, model_max_length=model_max_length)


def tiny_t5_encoder(d_model: int, vocab_size: int, seed: int) -> T5EncoderModel:
    """A 2-layer T5 v1.1 encoder (gated-GELU, like PixArt's and FLUX's T5-XXL) of width `d_model`."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=max(1, d_model // 8),
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _seeded(seed, lambda: T5EncoderModel(config).eval())


def tiny_clip_encoder(hidden_size: int, vocab_size: int, eos_token_id: int, seed: int) -> CLIPTextModel:
    """A 2-layer CLIP text encoder; FLUX only uses its pooled output, taken at the `eos_token_id` position."""
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_TOKENS,
        projection_dim=hidden_size,
        bos_token_id=0,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    return _seeded(seed, lambda: CLIPTextModel(config).eval())


def tiny_vae(latent_channels: int, block_out_channels: Sequence[int], seed: int, **config: Any) -> AutoencoderKL:
    """A small `AutoencoderKL`; the pipelines take its scale factor as 2 ** (len(block_out_channels) - 1)."""
    blocks = len(block_out_channels)
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=min(block_out_channels),
            **config,
        ).eval(),
    )


def tiny_width_pixart_transformer(
    num_layers: int = 28,
    num_attention_heads: int = 4,
    attention_head_dim: int = 16,
    sample_size: int = 8,
    caption_channels: int = 64,
    seed: int = 0,
) -> PixArtTransformer2DModel:
    """A PixArt transformer as configured on the hub (ada_norm_single, patch 2, 4 -> 8 channels), but narrow.

    With the defaults it has PixArt's 28 blocks and about 1.9 M parameters: a runtime benchmark can time a
    full-depth denoiser on CPU. `tiny_pixart_pipeline` builds its transformer with this function.
    """
    inner_dim = num_attention_heads * attention_head_dim
    return _seeded(
        seed,
        lambda: PixArtTransformer2DModel(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=4,
            out_channels=8,
            num_layers=num_layers,
            cross_attention_dim=inner_dim,
            sample_size=sample_size,
            patch_size=2,
            norm_type="ada_norm_single",
            caption_channels=caption_channels,
        ).eval(),
    )


def pixart_scheduler() -> DPMSolverMultistepScheduler:
    """PixArt's default sampler: multistep DPM-Solver++ (order 2) on the linear-beta epsilon schedule."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
    )


def tiny_pixart_pipeline(
    *,
    num_layers: int = 2,
    num_attention_heads: int = 2,
    attention_head_dim: int = 8,
    sample_size: int = 8,
    caption_channels: int = 32,
    text_tokens: int = 16,
    seed: int = 0,
    sigma: bool = False,
) -> PixArtAlphaPipeline | PixArtSigmaPipeline:
    """A stock PixArt-α (or, with `sigma`, PixArt-Σ) pipeline with random weights, built in under a second.

    Call it with `TINY_PIXART_CALL_KWARGS` (or the same keys adapted to non-default sizes): the native image
    is `sample_size * 2` pixels square, any multiple of 8 works, and `max_sequence_length` should be
    `text_tokens`.
    """
    tokenizer = tiny_t5_tokenizer(model_max_length=text_tokens)
    pipeline_class = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    return pipeline_class(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(caption_channels, len(tokenizer), seed),
        vae=tiny_vae(4, PIXART_VAE_BLOCKS, seed),
        transformer=tiny_width_pixart_transformer(
            num_layers, num_attention_heads, attention_head_dim, sample_size, caption_channels, seed
        ),
        scheduler=pixart_scheduler(),
    )


def full_depth_tiny_pixart_pipeline(seed: int = 0) -> PixArtAlphaPipeline:
    """A PixArt-α pipeline around `tiny_width_pixart_transformer()`: 28 narrow blocks for runtime benchmarks.

    It is `tiny_pixart_pipeline` with `FULL_DEPTH_TINY_PIXART`, called with `TINY_PIXART_CALL_KWARGS`.
    """
    return cast(PixArtAlphaPipeline, tiny_pixart_pipeline(**FULL_DEPTH_TINY_PIXART, seed=seed))


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler config: flow-matching Euler with resolution-dependent (dynamic) shifting."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _rope_axes(attention_head_dim: int) -> tuple[int, int, int]:
    """FLUX's (text, row, column) rotary split of a head: 16:56:56 of 128 for FLUX.1, (4, 6, 6) for 16.

    Rows and columns get 7/16 of the head each, rounded down to even (rotary pairs), the text axis the rest.
    """
    side = 7 * attention_head_dim // 16 // 2 * 2
    return attention_head_dim - 2 * side, side, side


def tiny_flux_pipeline(
    *,
    num_layers: int = 1,
    num_single_layers: int = 2,
    num_attention_heads: int = 2,
    attention_head_dim: int = 16,
    text_tokens: int = 16,
    seed: int = 0,
) -> FluxPipeline:
    """A stock FLUX.1-dev-style pipeline (guidance-distilled, 16-channel VAE) with random weights.

    Call it with `TINY_FLUX_CALL_KWARGS`: height and width must be multiples of 4 (VAE factor 2 × FLUX's 2×2
    latent packing), and `max_sequence_length` should be `text_tokens`.
    """
    clip_tokenizer = tiny_clip_tokenizer()
    t5_tokenizer = tiny_t5_tokenizer(model_max_length=text_tokens)
    latent_channels = 16
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=FLUX_T5_WIDTH,
            pooled_projection_dim=FLUX_CLIP_WIDTH,
            guidance_embeds=True,
            axes_dims_rope=_rope_axes(attention_head_dim),
        ).eval(),
    )
    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=tiny_vae(latent_channels, FLUX_VAE_BLOCKS, seed, **FLUX_VAE_CONFIG),
        text_encoder=tiny_clip_encoder(FLUX_CLIP_WIDTH, len(clip_tokenizer), clip_tokenizer.eos_token_id, seed),
        tokenizer=clip_tokenizer,
        text_encoder_2=tiny_t5_encoder(FLUX_T5_WIDTH, len(t5_tokenizer), seed),
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def save_tiny(pipe: DiffusionPipeline, folder: str | Path) -> Path:
    """Save a pipeline as safetensors in the hub layout: `<Pipeline>.from_pretrained(folder)` then loads it
    offline, tokenizers included, which is how tests get a fresh pipeline in a fraction of a second."""
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
