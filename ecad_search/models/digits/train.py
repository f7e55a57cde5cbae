"""Train the bundled digits model and its digit classifier, and write them as a diffusers pipeline folder.

    python -m ecad_search.models.digits.train                       # the shipped model, into ecad_search/assets/digits
    python -m ecad_search.models.digits.train --steps 200 --width 32 --depth 2 --output /tmp/digits --eval-per-digit 10
    python -m ecad_search.models.digits.train --depth 28 --width 64 --head-dim 16 --weights-dtype float16 \
        --output ecad_search/assets/digits-28     # digits-28: PixArt-α's depth

The denoiser is a PixArt-α transformer trained with the epsilon objective on sklearn's 8×8 digits scaled to
[-1, 1], with 10 % of the labels dropped to the null class for classifier-free guidance, a cosine noise
schedule (the linear one leaves an 8×8 image almost pure noise from t≈500 on, ᾱ=0.08), PixArt's own
initialisation and an exponential moving average of the weights.

Why guidance used to collapse, and the fix. Sampled with DDIM and x₀ clipped to [-1, 1] (diffusers' default
`clip_sample=True`), this model draws the prompted digit in 97 % of 500 samples at guidance 1, but 78 % at 2,
16 % at 3 and 1 % at 5. At mid noise levels an epsilon model's x₀ estimate is noisy (about half the pixels
outside [-1, 1] at t≈750 with guidance 3); DDIM clips x₀ but then re-derives epsilon from the clipped x₀, which
puts the clipped-away excess back into x_t, so every guided step pushes x_t further off the training
distribution. Guidance applied only below t=250 or only above t=800 is harmless; applied in between it
collapses. Without clipping there is no collapse (about 90 % at every scale) but the samples are speckled
(Fréchet 131 against 14 with clipping, at guidance 1). The sampler shipped here is DPM-Solver++ (2M, data
prediction), PixArt-α's own default scheduler, with thresholding at the data range (`sample_max_value=1`,
i.e. a static clip): it moves x_t towards the clipped x₀ without re-deriving epsilon, and keeps 100 %
accuracy from guidance 2 to 5 with clean samples (figures in ecad_search/assets/digits/training.json).

Everything random draws from seeded generators, so a seed reproduces the weights bit for bit on one device.
Every `--checkpoint-every` steps the whole training state (weights, EMA, optimiser moments, the generator's
state, the losses so far) is written to `OUTPUT.checkpoint/` as safetensors and JSON (no pickle). Run the
same command again after a stop and it resumes from there, bit-identical to a run that never stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, PixArtTransformer2DModel
from torch import nn
from torch.nn import functional as F

from ...metrics.reward import load_real_digits, save_digit_classifier, train_digit_classifier
from . import ASSETS_DIR, NO_MICRO_CONDITIONS, NUM_DIGITS, default_transformer_config
from .checkpoint import CHECKPOINT_STATE, load_checkpoint, save_checkpoint
from .evaluate import GUIDANCE_SCALES, evaluation_record, format_table
from .pipeline import DigitsPipeline, DigitsTextEncoder


@dataclass
class TrainConfig:
    """Every knob of a training run; recorded in training.json next to the weights."""

    steps: int = 6000
    batch_size: int = 64
    width: int = 96
    depth: int = 6
    head_dim: int = 32
    text_tokens: int = 4
    caption_channels: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 250
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    seed: int = 0
    device: str = "cpu"
    classifier_epochs: int = 40
    eval_per_digit: int = 50
    eval_steps: int = 20
    guidance_scales: tuple[float, ...] = field(default=GUIDANCE_SCALES)
    log_every: int = 100
    weights_dtype: str = "float32"
    checkpoint_every: int = 500


def make_noise_scheduler() -> DDPMScheduler:
    """The forward process used to corrupt training images: 1,000 steps of the cosine schedule."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")


def make_scheduler() -> DPMSolverMultistepScheduler:
    """The sampler shipped with the model: DPM-Solver++ 2M on the training schedule, x₀ clipped to [-1, 1].

    With `sample_max_value=1` the dynamic threshold is always 1, so thresholding is a plain clip of x₀ to the
    data range; the first step is at t=999 ("trailing"), where training put pure noise.
    """
    return DPMSolverMultistepScheduler.from_config(
        make_noise_scheduler().config,
        algorithm_type="dpmsolver++",
        solver_order=2,
        thresholding=True,
        sample_max_value=1.0,
        timestep_spacing="trailing",
    )


def build_models(config: TrainConfig) -> nn.ModuleDict:
    """Transformer and text encoder, seeded and initialised as PixArt-α initialises its own."""
    torch.manual_seed(config.seed)
    transformer = PixArtTransformer2DModel(
        **default_transformer_config(config.width, config.depth, config.head_dim, config.caption_channels)
    )
    init_pixart_weights(transformer)
    text_encoder = DigitsTextEncoder(
        num_classes=NUM_DIGITS, text_tokens=config.text_tokens, caption_channels=config.caption_channels
    )
    return nn.ModuleDict({"transformer": transformer, "text_encoder": text_encoder})


def init_pixart_weights(transformer: PixArtTransformer2DModel) -> None:
    """PixArt-α's `initialize_weights`: Xavier linears, small embedders, zeroed cross-attn out and output.

    Zeroing the cross-attention output and the final projection makes every block start as an identity on
    its residual stream and the model start by predicting zero noise, which trains faster and more stably than
    diffusers' default init.
    """
    for module in transformer.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    projection = transformer.pos_embed.proj.weight
    nn.init.xavier_uniform_(projection.view(projection.shape[0], -1))
    embedder = transformer.adaln_single.emb.timestep_embedder
    nn.init.normal_(embedder.linear_1.weight, std=0.02)
    nn.init.normal_(embedder.linear_2.weight, std=0.02)
    nn.init.normal_(transformer.adaln_single.linear.weight, std=0.02)
    nn.init.normal_(transformer.caption_projection.linear_1.weight, std=0.02)
    nn.init.normal_(transformer.caption_projection.linear_2.weight, std=0.02)
    for block in transformer.transformer_blocks:
        nn.init.zeros_(block.attn2.to_out[0].weight)
        nn.init.zeros_(block.attn2.to_out[0].bias)
    nn.init.zeros_(transformer.proj_out.weight)
    nn.init.zeros_(transformer.proj_out.bias)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """EMA with the usual warm-up ((1+t)/(10+t)), so early averages are not dominated by the random init."""
    rate = min(decay, (1 + step) / (10 + step))
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1 - rate)


def denoising_loss(
    models: nn.ModuleDict,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    label_dropout: float,
) -> torch.Tensor:
    """Epsilon-prediction MSE on one batch; noise, timesteps and label dropout come from `generator`."""
    batch = images.shape[0]
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
    dropped = torch.rand(batch, generator=generator) < label_dropout
    labels = torch.where(dropped.to(labels.device), models["text_encoder"].null_label, labels)
    timesteps = timesteps.to(images.device)
    prediction = models["transformer"](
        hidden_states=scheduler.add_noise(images, noise, timesteps),
        encoder_hidden_states=models["text_encoder"](labels),
        timestep=timesteps,
        added_cond_kwargs=dict(NO_MICRO_CONDITIONS),
        return_dict=False,
    )[0]
    return F.mse_loss(prediction, noise)


def train_denoiser(
    config: TrainConfig, log: Callable[[str], None] = print, checkpoint: Path | None = None
) -> tuple[nn.ModuleDict, dict[str, float]]:
    """Train on all 1,797 digits; returns the EMA models and loss statistics.

    With a `checkpoint` folder, the state is saved there every `config.checkpoint_every` steps, and a run that
    finds one there resumes from it.
    """
    models = build_models(config).to(config.device)
    ema = copy.deepcopy(models).requires_grad_(False)
    scheduler = make_noise_scheduler()
    images, labels = load_real_digits()
    images, labels = (images * 2 - 1).to(config.device), labels.to(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(models.parameters(), lr=config.learning_rate, betas=(0.9, 0.99))
    losses: list[float] = []
    start = 0
    if checkpoint is not None and (checkpoint / CHECKPOINT_STATE).is_file():
        start, losses = load_checkpoint(checkpoint, asdict(config), models, ema, optimizer, generator)
        log(f"resuming from step {start} (checkpoint in {checkpoint})")
    for step in range(start, config.steps):
        batch = torch.randint(0, len(labels), (config.batch_size,), generator=generator).to(config.device)
        loss = denoising_loss(models, scheduler, images[batch], labels[batch], generator, config.label_dropout)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(models.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, models, step, config.ema_decay)
        losses.append(loss.item())
        if (step + 1) % config.log_every == 0:
            recent = sum(losses[-config.log_every :]) / config.log_every
            log(f"step {step + 1}/{config.steps}  loss {recent:.4f}")
        if checkpoint is not None and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            save_checkpoint(checkpoint, step + 1, asdict(config), models, ema, optimizer, generator, losses)
    tail = losses[-min(len(losses), 200) :]
    return ema.eval(), {"final_loss": sum(tail) / len(tail), "first_loss": losses[0]}


def save_pipeline(models: nn.ModuleDict, output: Path, weights_dtype: str = "float32") -> DigitsPipeline:
    """Write the diffusers pipeline folder (model_index.json, transformer/, text_encoder/, scheduler/).

    With `weights_dtype="float16"` the weights are stored at half the size; the returned pipeline holds those
    rounded weights in float32, exactly what loading the folder gives, so the sweep measures what ships.
    """
    pipe = DigitsPipeline(
        transformer=models["transformer"].cpu(),
        text_encoder=models["text_encoder"].cpu(),
        scheduler=make_scheduler(),
    )
    # torch's own cast: diffusers' ModelMixin.to warns about keep-in-float32 modules, which these have none of.
    modules = (pipe.transformer, pipe.text_encoder)
    for module in modules:
        nn.Module.to(module, getattr(torch, weights_dtype))
    pipe.save_pretrained(output)
    for module in modules:
        nn.Module.to(module, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train(config: TrainConfig, output: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train both models, save them into `output`, measure the guidance sweep and write training.json."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    checkpoint = output.with_name(f"{output.name}.checkpoint")
    models, stats = train_denoiser(config, log, checkpoint)
    denoiser_seconds = time.perf_counter() - started
    classifier, classifier_stats = train_digit_classifier(config.seed, config.classifier_epochs, device=config.device)
    log(f"classifier held-out accuracy {classifier_stats['held_out_accuracy']:.4f}")
    pipe = save_pipeline(models, output, config.weights_dtype)
    save_digit_classifier(classifier, output / "classifier", extra=classifier_stats)
    pipe.to(config.device)
    record: dict[str, Any] = {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in pipe.transformer.parameters()),
        "denoiser": {**stats, "wall_seconds": round(denoiser_seconds, 1)},
        "classifier": classifier_stats,
    }
    if config.eval_per_digit:
        record.update(
            evaluation_record(
                pipe, classifier, config.guidance_scales, config.eval_per_digit, config.eval_steps, config.seed
            )
        )
        evaluation = record["evaluation"]
        log(format_table(evaluation["rows"], record["frechet_floor"], record["chosen_guidance"]))
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(checkpoint, ignore_errors=True)
    return record


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path, int]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ASSETS_DIR)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--width", type=int, default=defaults.width, help="transformer hidden size")
    parser.add_argument("--depth", type=int, default=defaults.depth, help="number of transformer blocks")
    parser.add_argument("--head-dim", type=int, default=defaults.head_dim)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    parser.add_argument("--classifier-epochs", type=int, default=defaults.classifier_epochs)
    parser.add_argument("--eval-per-digit", type=int, default=defaults.eval_per_digit, help="0 skips the sweep")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--weights-dtype", choices=("float32", "float16"), default=defaults.weights_dtype, help="stored weights"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=defaults.checkpoint_every, help="steps between resumable checkpoints"
    )
    args = parser.parse_args(argv)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        width=args.width,
        depth=args.depth,
        head_dim=args.head_dim,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=args.device,
        classifier_epochs=args.classifier_epochs,
        eval_per_digit=args.eval_per_digit,
        checkpoint_every=args.checkpoint_every,
        weights_dtype=args.weights_dtype,
    )
    return config, args.output, args.threads


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, output, threads = parse_args(argv)
    torch.set_num_threads(threads)
    return train(config, output)


if __name__ == "__main__":
    main()
