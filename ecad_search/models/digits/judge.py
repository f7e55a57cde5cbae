"""The digits models' judge: a second network that reads digits, trained apart from everything a search tunes.

A claim made in the features the search optimised can be a claim about those features only. The judge
shares no weights, no architecture and no training run with the bundled classifier whose probability is the
`reward` metric and whose features give the `frechet` metric: it is a multilayer perceptron on raw pixels,
trained from its own seed on the same fixed training split of sklearn's digits (so its held-out accuracy is
measured on digits it never saw). It gives two figures of every scored schedule:

- adherence: whether the image shows the prompted digit, as the judge reads it (its most likely class);
- the second Fréchet judge: the distance to real digits in its hidden layer, the features no search saw.

It ships beside the model (assets/digits/judge/: config.json and safetensors); rebuild it, bit for bit on
one device, with ``python -m ecad_search.models.digits.judge``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from ...metrics.reward import digit_accuracy, digits_split, load_real_digits

JUDGE_DIR = Path(__file__).resolve().parents[2] / "assets" / "digits" / "judge"
JUDGE_SEED = 1


class DigitJudge(nn.Module):
    """Two hidden layers on the 64 raw pixels; the second hidden layer's activations are its features."""

    def __init__(self, hidden: int = 128, features: int = 48) -> None:
        super().__init__()
        self.config = {"hidden": hidden, "features": features}
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, features), nn.ReLU())
        self.head = nn.Linear(features, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Hidden activations (B, features) of images (B, 1, 8, 8) in [0, 1]."""
        return self.body(images.flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_judge(seed: int = JUDGE_SEED, epochs: int = 300) -> tuple[DigitJudge, dict[str, float]]:
    """Full-batch AdamW on the training split, from `seed`; returns the judge and its held-out accuracy."""
    torch.manual_seed(seed)
    images, labels = load_real_digits()
    train, held_out = digits_split()
    judge = DigitJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(epochs):
        loss = F.cross_entropy(judge(images[train]), labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    judge.eval()
    accuracy = digit_accuracy(judge, images[held_out], labels[held_out])
    return judge, {"final_loss": float(loss.detach()), "held_out_accuracy": accuracy}


def save_judge(judge: DigitJudge, folder: Path, stats: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**judge.config, "seed": JUDGE_SEED, **stats}, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, folder / "model.safetensors")


def load_judge(folder: Path = JUDGE_DIR, device: str = "cpu") -> DigitJudge:
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no digit judge in {folder}; rebuild it with `python -m ecad_search.models.digits.judge`"
        )
    config = json.loads((folder / "config.json").read_text())
    judge = DigitJudge(config["hidden"], config["features"])
    judge.load_state_dict(load_file(folder / "model.safetensors"))
    return judge.to(device).eval()


class DigitAdherence:
    """Adherence on the digits models: 100 points for an image the judge reads as its prompted digit, else 0."""

    key = "adherence"

    def __init__(self, judge: DigitJudge) -> None:
        self.judge = judge

    @torch.no_grad()
    def units(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor, images_per_prompt: int
    ) -> list[float]:
        from .prompts import parse_digit_prompt

        device = next(self.judge.parameters()).device
        read = self.judge(images.to(device, torch.float32)).argmax(dim=1).cpu()
        asked = torch.tensor([parse_digit_prompt(prompt) for prompt in prompts])
        return (100.0 * (read == asked).double()).tolist()


class SecondFrechetJudge:
    """The Fréchet rise over the uncached images, per seed, in the judge's features (which no search tuned):
    stored as the `frechet` metric's units, so 1 − their mean is the rise."""

    key = "quality_judge"

    def __init__(self, judge: DigitJudge) -> None:
        from ...metrics.frechet import FrechetMetric

        self.metric = FrechetMetric(judge)

    def units(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor, images_per_prompt: int
    ) -> list[float]:
        if images_per_prompt < self.metric.min_images_per_prompt:
            return []
        return self.metric.unit_scores(images, prompts, references, images_per_prompt).tolist()


def digit_judges(device: str = "cpu") -> list[DigitAdherence | SecondFrechetJudge]:
    judge = load_judge(device=device)
    return [DigitAdherence(judge), SecondFrechetJudge(judge)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=JUDGE_DIR)
    parser.add_argument("--seed", type=int, default=JUDGE_SEED)
    args = parser.parse_args()
    judge, stats = train_judge(args.seed)
    save_judge(judge, args.output, stats)
    print(f"judge held-out accuracy {stats['held_out_accuracy']:.4f} -> {args.output}")


if __name__ == "__main__":
    main()
