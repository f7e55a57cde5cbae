"""Training checkpoints of the digits model: the whole training state as safetensors and JSON (no pickle), so
a stopped training run resumes bit-identical to one that never stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_STATE = "state.json"
# Options that change nothing the checkpoint holds: how often to log or save, and what to evaluate after.
_NOT_TRAINING = (
    "log_every",
    "checkpoint_every",
    "eval_per_digit",
    "eval_steps",
    "guidance_scales",
    "device",
    "weights_dtype",
)


def _training_options(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in _NOT_TRAINING}


CHECKPOINT_TENSORS = "tensors.safetensors"


def save_checkpoint(
    folder: Path,
    step: int,
    options: dict[str, Any],
    models: nn.ModuleDict,
    ema: nn.ModuleDict,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    losses: list[float],
) -> None:
    """Everything a resumed run needs, as safetensors and JSON, written so that a stop mid-write leaves the
    previous checkpoint whole (the JSON, written last, names the step the tensors belong to)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    optimizer_state = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in models.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for index, state in optimizer_state["state"].items():
        tensors.update({f"optimizer.{index}.{name}": value.cpu() for name, value in state.items()})
    tensors["generator"] = generator.get_state()
    save_file(tensors, folder / f".{CHECKPOINT_TENSORS}.tmp")
    (folder / f".{CHECKPOINT_TENSORS}.tmp").replace(folder / CHECKPOINT_TENSORS)
    state = {"step": step, "config": options, "losses": losses, "param_groups": optimizer_state["param_groups"]}
    (folder / f".{CHECKPOINT_STATE}.tmp").write_text(json.dumps(state))
    (folder / f".{CHECKPOINT_STATE}.tmp").replace(folder / CHECKPOINT_STATE)


def load_checkpoint(
    folder: Path,
    options: dict[str, Any],
    models: nn.ModuleDict,
    ema: nn.ModuleDict,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[int, list[float]]:
    """Restore a checkpoint of this very configuration; another configuration's is refused, not mixed in."""
    from safetensors.torch import load_file

    state = json.loads((folder / CHECKPOINT_STATE).read_text())
    stored, wanted = _training_options(state["config"]), _training_options(options)
    if stored != wanted:
        differing = sorted(key for key in stored.keys() | wanted.keys() if stored.get(key) != wanted.get(key))
        raise SystemExit(
            f"the checkpoint in {folder} is for other options ({', '.join(differing)}); repeat them to resume, "
            "or delete the folder to start afresh"
        )
    tensors = load_file(folder / CHECKPOINT_TENSORS, device=str(options["device"]))
    models.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")})
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": state["param_groups"]})
    generator.set_state(tensors["generator"].cpu())
    return int(state["step"]), list(state["losses"])
