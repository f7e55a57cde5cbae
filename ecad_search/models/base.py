"""What the rest of ecad-search needs to know about a model, without loading its weights.

A `ModelSpec` is one registry entry (hub ids, architecture config, generation defaults). A `ModelFamily` is
the code shared by every entry of one architecture family: which transformer class to build, how to load the
real pipeline, and which dummy inputs drive one transformer forward (used by the analytic cost model on the
meta device and by the runtime benchmark on random weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class ModelNotAvailableError(RuntimeError):
    """The weights of a registered model are not on this machine and cannot be fetched."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: everything needed to build, cost and run a model.

    `transformer_config` is the architecture config of the denoiser as diffusers stores it in
    `transformer/config.json`; it is enough to compute the cost of a schedule with no weights at all.
    `text_tokens` is the length of the text sequence the transformer attends to (T5 max length for PixArt,
    `max_sequence_length` for FLUX). `cfg_batch` says whether a generation step runs the guidance pair as one
    batched transformer call (PixArt), which doubles the transformer batch.
    """

    name: str
    family: str
    description: str
    transformer_config: dict[str, Any]
    text_tokens: int
    default_steps: int = 20
    resolution: int = 256
    guidance_scale: float = 4.5
    dtype: str = "float16"
    cfg_batch: bool = True
    vae_scale_factor: int = 8
    pipeline_class: str = ""
    transformer_id: str | None = None
    transformer_subfolder: str | None = "transformer"
    pipeline_id: str | None = None
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    how_to_get: str = ""

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def transformer_rows(self, guidance_scale: float | None = None) -> int:
        """Rows one image occupies in the transformer batch: 2 with a batched CFG pair, else 1."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return 2 if self.cfg_batch and scale > 1.0 else 1


class ModelFamily:
    """Code shared by all models of one architecture family; one subclass per family module."""

    name: str = ""
    pipeline_classes: tuple[str, ...] = ()
    default_text_tokens: int = 0

    def transformer_class(self) -> type[torch.nn.Module]:
        raise NotImplementedError

    def transformer_inputs(
        self,
        config: dict[str, Any],
        *,
        height: int,
        width: int,
        batch_size: int,
        text_tokens: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Any]:
        """Keyword arguments for one transformer forward (values are random).

        `height` and `width` are the latent size the transformer sees (pixels / `spec.vae_scale_factor`).
        """
        raise NotImplementedError

    def load_pipeline(
        self,
        spec: ModelSpec,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        local_files_only: bool = False,
    ) -> Any:
        """Load the real pipeline with `from_pretrained`; a missing model raises `ModelNotAvailableError`.

        When the spec names a separate transformer checkpoint (PixArt 256/512 px), that transformer replaces
        the one of the pipeline checkpoint, which supplies the text encoder, VAE and scheduler.
        """
        import diffusers

        dtype = spec.torch_dtype if dtype is None else dtype
        options: dict[str, Any] = {"dtype": dtype, "local_files_only": local_files_only}
        try:
            if spec.transformer_id:
                options["transformer"] = self.transformer_class().from_pretrained(
                    spec.transformer_id, subfolder=spec.transformer_subfolder, **options
                )
            pipe = getattr(diffusers, spec.pipeline_class).from_pretrained(spec.pipeline_id, **options)
        except (OSError, ValueError) as err:
            raise ModelNotAvailableError(
                f"cannot load model '{spec.name}': {first_line(err)}. {spec.how_to_get}"
            ) from err
        return pipe.to(device)

    def encode_prompts(self, pipe: Any, spec: ModelSpec, prompts: list[str], guidance_scale: float) -> dict[str, Any]:
        """Keyword arguments that stand for `prompt` in a pipeline call, computed once per prompt set.

        For real models the text encoder is the costly part of a call, so an evaluator encodes its
        calibration prompts once and reuses the embeddings for every candidate.
        """
        return {"prompt": prompts}

    def call_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """Keyword arguments every pipeline call of this family needs on top of the user's."""
        return dict(spec.pipeline_kwargs)


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
