"""What the rest of ecad-search needs to know about a model, without loading its weights.

A `ModelSpec` is one registry entry (hub ids, architecture config, generation defaults). A `ModelFamily` is
the code shared by every entry of one architecture family: which transformer class to build, how to load the
real pipeline, and which dummy inputs drive one transformer forward (used by the analytic cost model on the
meta device and by the runtime benchmark on random weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..schedule import BlockGroup
from .hub import ModelNotAvailableError, require_fetchable

if TYPE_CHECKING:
    import torch

# Bytes per element of the dtypes a spec may name: cache-memory figures need no torch import.
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: everything needed to build, cost and run a model.

    `transformer_config` is the architecture config of the denoiser as diffusers stores it in
    `transformer/config.json`; it is enough to compute the cost of a schedule with no weights at all.
    `text_tokens` is the length of the text sequence the transformer attends to (T5 max length for PixArt,
    `max_sequence_length` for FLUX). `cfg_batch` says whether a generation step runs the guidance pair as one
    batched transformer call (PixArt), which doubles the transformer batch. `resolutions` lists the only sizes
    the model generates (empty: any whole number of tokens). `calibration_images_per_prompt` and
    `held_out_images_per_prompt` are the search's default seeds per prompt on its two splits; `metric`,
    `objective`, `guard` and `batch_size` its default metric, what the search minimises (`families`),
    selection-bias guard and images per pipeline call (0: all at once). Each is chosen by measurement for the
    model (docs/search.md).
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
    resolutions: tuple[int, ...] = ()
    calibration_images_per_prompt: int = 1
    held_out_images_per_prompt: int = 1
    metric: str = "image-reward"
    objective: str = "quality"
    guard: str = "both"
    batch_size: int = 0

    @property
    def hub_repos(self) -> tuple[str, ...]:
        """The Hub repositories the pipeline loads from (none for a local folder or a bundled model)."""
        ids = (self.transformer_id, self.pipeline_id)
        return tuple(dict.fromkeys(i for i in ids if i and "/" in i and not _is_local(i)))

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

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
    # Latent pixels a transformer token covers beyond the patch size (FLUX packs 2×2 latents into one token).
    latent_packing: int = 1
    # Pipeline components only `encode_prompts` uses: a worker given its embeddings can drop them.
    text_encoders: tuple[str, ...] = ()

    def release_text_encoders(self, pipe: Any) -> list[str]:
        """Drop the text encoders of a pipeline that is only called with prompt embeddings (PixArt's T5-XXL
        is far larger than its transformer); returns the components dropped."""
        dropped = [name for name in self.text_encoders if getattr(pipe, name, None) is not None]
        if dropped:
            pipe.register_modules(**dict.fromkeys(dropped))
        return dropped

    def check_resolution(self, spec: ModelSpec, resolution: int) -> None:
        """Refuse a size the model cannot generate: off its published checkpoints, or not a whole number of
        transformer tokens."""
        if spec.resolutions and resolution not in spec.resolutions:
            sizes = ", ".join(str(r) for r in spec.resolutions)
            raise ValueError(
                f"{spec.name} generates {sizes} px images, not {resolution}; pass one of those as `resolution`"
            )
        step = self.token_pixels(spec)
        if resolution < step or resolution % step or resolution > 4096:
            raise ValueError(
                f"`resolution` {resolution} is not a multiple of {step} px (one token of {spec.name}) from {step} "
                f"to 4096; e.g. `resolution` {spec.resolution}"
            )

    def token_pixels(self, spec: ModelSpec) -> int:
        """The side, in pixels, of the image square one transformer token stands for."""
        return spec.vae_scale_factor * int(spec.transformer_config.get("patch_size") or 1) * self.latent_packing

    def transformer_class(self) -> type[torch.nn.Module]:
        """The diffusers transformer class; imported only when called, so listing models stays instant."""
        raise NotImplementedError

    def block_groups(self, config: dict[str, Any]) -> tuple[BlockGroup, ...]:
        """The block groups a transformer of this config has, read from the config alone (no diffusers import).

        Must equal what `blocks.discover_block_groups` finds on the built transformer; tests check it for every
        registered model and for tiny configs.
        """
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
        dtype: torch.dtype | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for one transformer forward (values are random; float32 unless `dtype`).

        `height` and `width` are the latent size the transformer sees (pixels / `spec.vae_scale_factor`).
        """
        raise NotImplementedError

    def load_pipeline(
        self, spec: ModelSpec, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> Any:
        """Load the real pipeline with `from_pretrained`; a missing model raises `ModelNotAvailableError`.

        The local cache is tried first, without network. Only when the model is not there is the Hub asked,
        once and without retries, whether it can be fetched (`hub.require_fetchable`), so an offline machine
        gets its one-line answer in seconds rather than after half a minute of retries.

        When the spec names a separate transformer checkpoint (PixArt 256/512 px), that transformer replaces
        the one of the pipeline checkpoint, which supplies the text encoder, VAE and scheduler.
        """
        try:
            pipe = self._from_pretrained(spec, dtype, local_files_only=True)
        except (OSError, ValueError) as err:
            if not spec.hub_repos:
                raise ModelNotAvailableError(
                    f"cannot load model '{spec.name}': {first_line(err)}. {spec.how_to_get}"
                ) from err
            require_fetchable(spec.name, spec.hub_repos)
            try:
                pipe = self._from_pretrained(spec, dtype, local_files_only=False)
            except (OSError, ValueError) as fetch_err:
                raise ModelNotAvailableError(f"cannot load model '{spec.name}': {first_line(fetch_err)}") from fetch_err
        return pipe.to(device)

    def _from_pretrained(self, spec: ModelSpec, dtype: torch.dtype | None, *, local_files_only: bool) -> Any:
        import diffusers

        options: dict[str, Any] = {
            "dtype": spec.torch_dtype if dtype is None else dtype,
            "local_files_only": local_files_only,
        }
        if spec.transformer_id:
            options["transformer"] = self.transformer_class().from_pretrained(
                spec.transformer_id, subfolder=spec.transformer_subfolder, **options
            )
        return getattr(diffusers, spec.pipeline_class).from_pretrained(spec.pipeline_id, **options)

    def pipeline_folder(self, spec: ModelSpec) -> str:
        """Where the pipeline's components (its scheduler among them) are read from: a folder or a Hub id."""
        return spec.pipeline_id

    def load_scheduler(self, spec: ModelSpec) -> Any:
        """The pipeline's scheduler alone, from its config (no weights), from this machine only."""
        import diffusers

        source = self.pipeline_folder(spec)
        try:
            index = diffusers.DiffusionPipeline.load_config(source, local_files_only=True)
            scheduler_class = getattr(diffusers, index["scheduler"][1])
            return scheduler_class.from_pretrained(source, subfolder="scheduler", local_files_only=True)
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ModelNotAvailableError(
                f"cannot read the scheduler of model '{spec.name}': {first_line(err)}. {spec.how_to_get}"
            ) from err

    def noise_positions(self, spec: ModelSpec, scheduler: Any, steps: int) -> list[float]:
        """Where each of `steps` denoising steps sits in the noise schedule: the scheduler's timesteps, set as
        the pipeline sets them."""
        scheduler.set_timesteps(steps)
        return [float(t) for t in scheduler.timesteps]

    def encode_prompts(self, pipe: Any, spec: ModelSpec, prompts: list[str], guidance_scale: float) -> dict[str, Any]:
        """Keyword arguments that stand for `prompt` in a pipeline call, computed once per prompt set.

        For real models the text encoder is the costly part of a call, so an evaluator encodes its
        calibration prompts once and reuses the embeddings for every candidate.
        """
        return {"prompt": prompts}

    def conditioning_key(self, prompt: str) -> str:
        """What the model actually sees of a prompt: prompts with equal keys give identical images (so they
        count as one prompt). A text encoder sees the whole text; the digits model sees only the digit."""
        return prompt

    def judges(self, spec: ModelSpec, device: str = "cpu") -> list[Any]:
        """The figures beyond the search's metric that claims are held in (`families.Judge`), where the family
        has judges of its own (digits); a family without an adherence judge gets CLIP's (`families`)."""
        return []

    def call_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """Keyword arguments every pipeline call of this family needs on top of the user's."""
        return dict(spec.pipeline_kwargs)

    def images_of(self, encoded: dict[str, Any], images_per_prompt: int) -> dict[str, Any]:
        """The call's arguments for `images_per_prompt` images of each prompt from `encode_prompts`' output:
        the pipelines that repeat given embeddings themselves take the count."""
        return {**encoded, "num_images_per_prompt": images_per_prompt}


def _is_local(name: str) -> bool:
    from pathlib import Path

    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__


def require_model(spec: ModelSpec) -> None:
    """Fail in seconds, before torch and diffusers are imported, when a Hub model is neither in the local
    cache nor fetchable. Looks for each repository's config file only; a partial download is left to the
    loader, which asks the Hub the same way when loading from the cache fails."""
    if not spec.hub_repos:
        return
    from huggingface_hub import try_to_load_from_cache

    key_files = {spec.pipeline_id: "model_index.json"}
    if spec.transformer_id:
        key_files[spec.transformer_id] = (
            f"{spec.transformer_subfolder}/config.json" if spec.transformer_subfolder else "config.json"
        )
    cached = (isinstance(try_to_load_from_cache(repo, name), str) for repo, name in key_files.items())
    if not all(cached):
        require_fetchable(spec.name, spec.hub_repos)
