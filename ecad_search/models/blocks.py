"""Find the block stacks of a diffusers transformer and the cacheable components of each block.

Groups are discovered the way diffusers' own cache hooks find them (direct `nn.ModuleList` children with the
usual block-stack names), so any DiT built from registered block classes is supported. The block registry
(in the style of diffusers' `TransformerBlockRegistry`) is the one source of block layout: per block class,
the sub-modules whose output the block gates and adds to its residual stream, which of them a config may
leave out, and whether the block carries the text stream too. Discovery on a built transformer and each
family's layout from its config both read it; adding a block class is one `register_block` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..schedule import BlockGroup, ScheduleError

if TYPE_CHECKING:
    import torch
    from torch import nn

BLOCK_STACK_NAMES = (
    "transformer_blocks",
    "single_transformer_blocks",
    "blocks",
    "layers",
    "visual_transformer_blocks",
    "temporal_transformer_blocks",
)


@dataclass(frozen=True)
class BlockMetadata:
    """What caching needs to know of one block class: its cacheable `components` in execution order, those a
    config may leave out (`optional`: PixArt without cross-attention), and whether it takes and returns both
    streams, `(encoder_hidden_states, hidden_states)` (`two_stream`), rather than the image stream alone."""

    components: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    two_stream: bool = False

    def without(self, *absent: str) -> tuple[str, ...]:
        """The components of a block built without the optional ones named."""
        unknown = set(absent) - self.optional
        if unknown:
            raise ValueError(
                f"components {sorted(unknown)} are not optional: the optional ones are {sorted(self.optional)}"
            )
        return tuple(name for name in self.components if name not in absent)


_BLOCKS: dict[str, BlockMetadata] = {}


def register_block(class_name: str, metadata: BlockMetadata) -> None:
    """Make a block class schedulable (a diffusers class name: blocks are matched by name, no import)."""
    _BLOCKS[class_name] = metadata


def block_metadata(class_name: str) -> BlockMetadata:
    if class_name not in _BLOCKS:
        raise ScheduleError(
            f"block class {class_name} has no known cacheable components; register it with "
            "ecad_search.models.blocks.register_block"
        )
    return _BLOCKS[class_name]


register_block("BasicTransformerBlock", BlockMetadata(("attn1", "attn2", "ff"), optional=frozenset({"attn2"})))
register_block("FluxTransformerBlock", BlockMetadata(("attn", "ff", "ff_context"), two_stream=True))
register_block("FluxSingleTransformerBlock", BlockMetadata(("attn", "proj_mlp", "proj_out"), two_stream=True))


def block_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """The image-token stream a block is given."""
    return args[0] if args else kwargs["hidden_states"]


def block_output(block: nn.Module, output: Any) -> torch.Tensor:
    """The image-token stream a block returns."""
    return output[1] if block_metadata(type(block).__name__).two_stream else output


def block_result(block: nn.Module, args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor) -> Any:
    """What the block returns when its image stream is `hidden` and its text stream passes through unchanged."""
    if not block_metadata(type(block).__name__).two_stream:
        return hidden
    encoder = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
    return encoder, hidden


def token_grid(transformer: nn.Module, latent: torch.Tensor, kwargs: dict[str, Any]) -> tuple[int, int]:
    """Rows and columns of the image-token grid of one transformer call: from the latent's height and width
    over the patch size, or from the position ids of a packed (FLUX) latent."""
    if latent.ndim == 4:
        patch = int(getattr(transformer.config, "patch_size", 1) or 1)
        return latent.shape[-2] // patch, latent.shape[-1] // patch
    ids = kwargs.get("img_ids")
    if ids is None:
        raise ScheduleError(f"{type(transformer).__name__} gets a packed latent without `img_ids`: no token grid")
    ids = ids[0] if ids.ndim == 3 else ids
    return int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1


def block_components(block: nn.Module) -> tuple[str, ...]:
    """The cacheable components present in this block (an absent cross-attention is left out)."""
    metadata = block_metadata(type(block).__name__)
    return metadata.without(*(name for name in metadata.optional if getattr(block, name, None) is None))


def discover_block_groups(transformer: nn.Module) -> tuple[BlockGroup, ...]:
    """Block groups of a transformer in execution (definition) order."""
    from torch import nn

    groups = []
    for name, child in transformer.named_children():
        if name in BLOCK_STACK_NAMES and isinstance(child, nn.ModuleList) and len(child) > 0:
            groups.append(BlockGroup(name, len(child), block_components(child[0])))
    if not groups:
        raise ScheduleError(f"{type(transformer).__name__} has no transformer block stack to schedule")
    return tuple(groups)


def component_modules(transformer: nn.Module, groups: tuple[BlockGroup, ...]) -> dict[tuple[int, int, int], nn.Module]:
    """Map (group index, block, component index) to the sub-module, checking the layout fits."""
    from torch import nn

    modules = {}
    for g, group in enumerate(groups):
        stack = getattr(transformer, group.name, None)
        if not isinstance(stack, nn.ModuleList):
            raise ScheduleError(f"schedule group '{group.name}' does not exist in {type(transformer).__name__}")
        if len(stack) != group.num_blocks:
            raise ScheduleError(
                f"schedule expects {group.num_blocks} blocks in '{group.name}' but the transformer has {len(stack)}"
            )
        for b, block in enumerate(stack):
            for c, comp in enumerate(group.components):
                module = getattr(block, comp, None)
                if not isinstance(module, nn.Module):
                    raise ScheduleError(f"block {group.name}.{b} has no component '{comp}'")
                modules[(g, b, c)] = module
    return modules


def modulated_input(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """The timestep-modulated input of a block's first attention: what TeaCache compares between steps.

    For an adaLN-single `BasicTransformerBlock` (PixArt): `norm1(h) · (1 + scale) + shift`, with shift and
    scale from the block's table plus the step's embedded timestep; for an adaLN-zero block (FLUX) its
    `norm1(h, emb=temb)`; other blocks use their plain norm.
    """
    if getattr(block, "norm_type", None) == "ada_norm_single":
        timestep = kwargs["timestep"]
        shift, scale = (block.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)[:2]
        return block.norm1(hidden) * (1 + scale) + shift
    if "temb" in kwargs:
        normed = block.norm1(hidden, emb=kwargs["temb"])
        return normed[0] if isinstance(normed, tuple) else normed
    return block.norm1(hidden)
