"""Prompt-adherence reward for the digits model: a small CNN digit classifier, the analogue of ImageReward.

The reward of an image is the classifier's probability of the digit its prompt asked for, so the quality
loss of a cache schedule is `1 - mean reward`. The classifier ships with the model
(assets/digits/classifier/) as a JSON config plus safetensors weights, and is trained on a fixed, seeded
split of sklearn's digits so that its held-out accuracy (and the Fréchet floor computed from the same split)
is reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from ..models.base import ModelSpec
from .base import MetricNotAvailableError, QualityMetric

CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "assets" / "digits" / "classifier"
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 sklearn digits as images (N,1,8,8) in [0,1] (raw values 0..16) and labels (N,)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target, dtype=torch.long)


def digits_split(seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held_out) of a stratified split; the default seed gives the split the assets use."""
    _, labels = load_real_digits()
    indices = list(range(len(labels)))
    train, held_out = train_test_split(indices, test_size=TEST_FRACTION, random_state=seed, stratify=labels.numpy())
    return torch.tensor(sorted(train)), torch.tensor(sorted(held_out))


class DigitClassifier(nn.Module):
    """Three 3×3 convolutions and two linear layers; `features` (penultimate) feed the Fréchet distance."""

    def __init__(self, channels: int = 32, features: int = 64, dropout: float = 0.3):
        super().__init__()
        self.config = {"channels": channels, "features": features, "dropout": dropout}
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.embed = nn.Linear(2 * channels * 2 * 2, features)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, features) for images (B,1,8,8) in [0,1]."""
        hidden = self.conv(images * 2 - 1)
        return F.relu(self.embed(hidden.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10) for images (B,1,8,8) in [0,1]."""
        return self.head(self.dropout(self.features(images)))


def train_digit_classifier(
    seed: int = 0, epochs: int = 40, batch_size: int = 64, device: str = "cpu"
) -> tuple[DigitClassifier, dict[str, float]]:
    """Train on the fixed split's training part; returns the model (eval mode) and loss / accuracy figures."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_real_digits()
    train, held_out = digits_split()
    model = DigitClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    model.train()
    epoch_losses: list[float] = []
    for _ in range(epochs):
        epoch_losses = []
        order = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(images[batch].to(device)), labels[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        scheduler.step()
    model.eval()
    accuracy = digit_accuracy(model, images[held_out], labels[held_out])
    return model, {"final_loss": sum(epoch_losses) / len(epoch_losses), "held_out_accuracy": accuracy}


@torch.no_grad()
def digit_accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose most likely digit is the given label."""
    device = next(classifier.parameters()).device
    predicted = classifier(images.to(device)).argmax(dim=1).cpu()
    return (predicted == labels.cpu()).float().mean().item()


@torch.no_grad()
def digit_reward(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-image probability (B,) of the prompted digit; images (B,1,8,8) in [0,1], labels (B,)."""
    device = next(classifier.parameters()).device
    probabilities = classifier(images.to(device, torch.float32)).softmax(dim=1)
    return probabilities.gather(1, labels.to(device).view(-1, 1)).squeeze(1).cpu()


def save_digit_classifier(classifier: DigitClassifier, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write config.json (architecture plus `extra`, e.g. held-out accuracy) and model.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**classifier.config, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in classifier.state_dict().items()}
    save_file(state, folder / "model.safetensors")


def require_digits(metric: str, spec: ModelSpec, instead: str) -> None:
    """Refuse a metric built on the digit classifier for any other model, naming the metrics to use instead."""
    if spec.family != "digits":
        raise MetricNotAvailableError(
            f"metric '{metric}' scores the digits model only; use `metric` {instead} for {spec.name}"
        )


def pipeline_classifier(pipeline_folder: str | Path | None, device: str = "cpu") -> DigitClassifier:
    """The classifier saved with a digits pipeline folder (its classifier/), else the bundled one."""
    own = Path(pipeline_folder) / "classifier" if pipeline_folder else None
    return load_digit_classifier(own if own is not None and own.is_dir() else None, device=device)


def load_digit_classifier(folder: str | Path | None = None, device: str = "cpu") -> DigitClassifier:
    """Load a classifier written by `save_digit_classifier`; defaults to the one bundled with the model."""
    folder = Path(folder) if folder is not None else CLASSIFIER_DIR
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no digit classifier in {folder}; rebuild it with `python -m ecad_search.models.digits.train`"
        )
    config = json.loads((folder / "config.json").read_text())
    architecture = {key: config[key] for key in ("channels", "features", "dropout")}
    classifier = DigitClassifier(**architecture)
    classifier.load_state_dict(load_file(folder / "model.safetensors"))
    return classifier.to(device).eval()


class DigitRewardMetric(QualityMetric):
    """The digits model's quality: probability that the classifier reads the prompted digit."""

    name = "reward"
    description = "digits: classifier probability of the prompted digit (the bundled model's ImageReward)"

    def __init__(self, classifier: DigitClassifier) -> None:
        self.classifier = classifier

    @classmethod
    def check(cls, spec: ModelSpec) -> None:
        require_digits("reward", spec, "fidelity, image-reward or clip")

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "cpu") -> DigitRewardMetric:
        cls.check(spec)
        return cls(pipeline_classifier(spec.pipeline_id, device))

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        from ..models.digits.prompts import parse_digit_prompt

        labels = torch.tensor([parse_digit_prompt(p) for p in prompts])
        return digit_reward(self.classifier, images, labels)


METRICS = (DigitRewardMetric,)
