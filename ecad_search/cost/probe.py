"""Count the MACs of one transformer forward on PyTorch's `meta` device, per schedule component.

Every linear layer and convolution is counted from its shapes and attributed to the schedule component it
runs inside, or to the per-step overhead outside them (embeddings, adaLN modulation, final layer). Attention
matmuls (QKᵀ and AV inside scaled-dot-product attention) are counted separately. No weights, no memory; the
only real cost is importing the transformer class, which is why `cost.py` keeps the result on disk.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..models import get_family
from ..models.blocks import component_modules, discover_block_groups
from ..schedule import BlockGroup


def count_macs(family_name: str, config: dict[str, Any], latent_h: int, latent_w: int, text_tokens: int) -> dict:
    """The cost table of one batch row as plain JSON-ready data (see `cost.CostTable.from_dict`)."""
    family = get_family(family_name)
    with torch.device("meta"):
        transformer = family.transformer_class().from_config(config)
    groups = discover_block_groups(transformer)
    modules = component_modules(transformer, groups)
    counter = _MacCounter([None, *modules])
    elements = dict.fromkeys(modules, 0)
    handles = []
    for key, module in modules.items():
        handles.append(module.register_forward_pre_hook(_enter(counter, key)))
        handles.append(module.register_forward_hook(_leave(counter, elements, key)))
    inputs = family.transformer_inputs(
        config, height=latent_h, width=latent_w, batch_size=1, text_tokens=text_tokens, device="meta"
    )
    with torch.no_grad(), counter:
        transformer(**inputs)
    for handle in handles:
        handle.remove()
    return {
        "groups": [group.to_dict() for group in groups],
        "linear_macs": _by_group(groups, counter.linear),
        "attention_macs": _by_group(groups, counter.attention),
        "overhead_linear_macs": float(counter.linear[None]),
        "overhead_attention_macs": float(counter.attention[None]),
        "output_elements": _by_group(groups, elements),
    }


class _MacCounter(TorchFunctionMode):
    """Counts linear, convolution and attention MACs of whatever runs under it, per active component."""

    def __init__(self, keys: list[Any]) -> None:
        super().__init__()
        self.active: Any = None
        self.linear = dict.fromkeys(keys, 0.0)
        self.attention = dict.fromkeys(keys, 0.0)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            weight = _arg(args, kwargs, 1, "weight")
            self.linear[self.active] += out.numel() * weight.shape[1]
        elif func is F.conv2d:
            weight = _arg(args, kwargs, 1, "weight")
            self.linear[self.active] += out.numel() * weight[0].numel()
        elif func is F.scaled_dot_product_attention:
            query, key = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
            value = _arg(args, kwargs, 2, "value")
            rows = query.numel() // query.shape[-1]
            self.attention[self.active] += rows * key.shape[-2] * (query.shape[-1] + value.shape[-1])
        return out


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


def _enter(counter: _MacCounter, key: Any):  # type: ignore[no-untyped-def]
    def hook(module: torch.nn.Module, args: Any) -> None:
        counter.active = key

    return hook


def _leave(counter: _MacCounter, elements: dict, key: Any):  # type: ignore[no-untyped-def]
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        counter.active = None
        tensors = output if isinstance(output, tuple) else (output,)
        elements[key] = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))

    return hook


def _by_group(groups: tuple[BlockGroup, ...], values: dict) -> dict[str, list[list[float]]]:
    return {
        group.name: [[float(values[(g, b, c)]) for c in range(len(group.components))] for b in range(group.num_blocks)]
        for g, group in enumerate(groups)
    }
