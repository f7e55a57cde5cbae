"""Score one schedule on a resident pipeline: the unit of work of the search (and, later, of each worker).

Everything that does not depend on the schedule is done once, when the evaluator is built: the pipeline is
loaded, prompt embeddings are encoded, the metric's weights are loaded, the uncached reference images (for
metrics that compare with them) and the uncached MACs and latency are computed. Every candidate is then
generated from the same prompts and the same per-image seeds (common random numbers), so differences between
candidates come from their masks alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .cost import estimate_macs
from .errors import FieldError
from .families import FAMILIES_KEY, OBJECTIVES, Judge, family_figures, fidelity_prompt_scores, load_judges, mean
from .fewer_steps import FewerSteps
from .generation import GenerationSettings, load_pipeline, pipeline_kwargs
from .metrics import QualityMetric, get_metric
from .models import ModelSpec, block_groups, get_family, schedule_metadata
from .models.blocks import discover_block_groups
from .policies import PolicyConfig, PolicyError, apply_policy
from .policies.calibration import calibrated
from .runtime import ScheduleHandle, apply_schedule
from .runtime.prefix import PrefixLink, PrefixTape, prefix_plan
from .schedule import CacheSchedule

COSTS = ("macs", "latency")


@dataclass(frozen=True)
class EvaluationSettings:
    """What makes two evaluations of the same mask comparable; its `key()` indexes the evaluation memo."""

    model: str
    metric: str
    prompts: tuple[str, ...]
    images_per_prompt: int
    steps: int
    guidance_scale: float
    resolution: int
    seed: int = 0
    cost: str = "macs"
    batch_size: int = 0
    # Also store the mean PSNR and SSIM to the uncached images beside their per-image families (`compare`);
    # part of the key only when set, so the keys of every earlier evaluation stay as they were.
    reference_figures: bool = False
    # The device that timed a latency-cost split (`--budget-latency`): seconds timed on another device are not
    # these. Part of the key only when set, as `reference_figures` is.
    timed_on: str = ""
    # What `quality_loss` and `prompt_scores` hold: the metric's loss ("quality") or the fidelity loss
    # (`families.OBJECTIVES`). Part of the key only when it is not the metric's, as `timed_on` is.
    objective: str = "quality"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise FieldError(f"unknown `objective` '{self.objective}': use one of {', '.join(OBJECTIVES)}")

    def key(self) -> str:
        fields = asdict(self)
        for optional, default in (("reference_figures", False), ("timed_on", ""), ("objective", "quality")):
            if fields[optional] == default:
                del fields[optional]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @property
    def num_images(self) -> int:
        return len(self.prompts) * self.images_per_prompt

    @property
    def shares_prefixes(self) -> bool:
        """Whether masks scored together may share their first steps: not where the cost is latency, which is
        measured on whole runs."""
        return self.cost != "latency"


def run_template(spec: ModelSpec, settings: EvaluationSettings) -> CacheSchedule:
    """The all-compute schedule of a run, from the registry entry alone: the search builds every candidate
    from it without loading a pipeline (workers load theirs)."""
    return CacheSchedule.all_compute(block_groups(spec), settings.steps, **schedule_metadata(spec)).with_metadata(
        height=settings.resolution, width=settings.resolution, guidance_scale=settings.guidance_scale
    )


def schedule_macs(schedule: CacheSchedule, spec: ModelSpec, settings: EvaluationSettings) -> float:
    """MACs per image at the run's resolution and guidance (the schedule's own metadata is not used)."""
    return estimate_macs(
        schedule,
        spec,
        height=settings.resolution,
        width=settings.resolution,
        batch_size=spec.transformer_rows(settings.guidance_scale),
    )


@dataclass(frozen=True)
class SplitInputs:
    """What every evaluator of one split needs besides the pipeline: prompt embeddings per pipeline call, the
    uncached reference images and the uncached seconds per image. Computed once per search and kept on the
    CPU, so one worker can compute them and the others receive them (Ray's object store)."""

    chunks: list[dict[str, Any]]
    references: torch.Tensor | None
    seconds_per_image: float

    @classmethod
    def on_cpu(cls, chunks: list[dict[str, Any]], references: torch.Tensor | None, seconds: float) -> SplitInputs:
        return cls([{k: _on(v, "cpu") for k, v in chunk.items()} for chunk in chunks], references, seconds)


def encode_chunks(pipe: Any, spec: ModelSpec, settings: EvaluationSettings) -> list[dict[str, Any]]:
    """A split's prompt embeddings per pipeline call (a call holds at most `batch_size` images): the only
    use of the text encoders, so a pipeline given them can drop its encoders."""
    per_call = max(1, settings.batch_size // settings.images_per_prompt) if settings.batch_size else 0
    prompts = list(settings.prompts)
    groups = [prompts[i : i + per_call] for i in range(0, len(prompts), per_call)] if per_call else [prompts]
    family = get_family(spec)
    with torch.no_grad():
        return [
            {"count": len(group), **family.encode_prompts(pipe, spec, group, settings.guidance_scale)}
            for group in groups
        ]


def _reuses(candidate: object) -> bool:
    """A schedule whose zeros reuse the last output: the only kind that can share a prefix. The uncached
    schedule has no zeros: its images are the split's references, taken without a run (`evaluate`)."""
    return isinstance(candidate, CacheSchedule) and candidate.fill == "reuse" and candidate.compute_fraction < 1.0


def _on(value: Any, device: str | torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class Evaluation:
    """The objectives of one schedule and the figures behind them.

    `prompt_scores` are the metric's unit scores (`QualityMetric.unit_scores`): one per prompt for per-image
    metrics, one per seed for set metrics; the name is kept because stored evaluations use it.
    """

    quality_loss: float
    cost: float
    macs: float
    latency_s: float | None
    prompt_scores: list[float] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0


class Evaluator:
    """A loaded pipeline, metric and prompt set that scores schedules one after another.

    The schedule hooks stay on the pipeline for the evaluator's life and each candidate's mask is swapped
    in; the no-cache mask is bit-identical to the plain pipeline.
    """

    def __init__(
        self,
        spec: ModelSpec,
        settings: EvaluationSettings,
        *,
        device: str = "cpu",
        pipe: Any = None,
        metric: QualityMetric | None = None,
        handle: ScheduleHandle | None = None,
        inputs: SplitInputs | None = None,
        judges: list[Judge] | None = None,
    ):
        if settings.cost not in COSTS:
            raise ValueError(f"unknown cost '{settings.cost}': use one of {', '.join(COSTS)}")
        self.spec, self.settings, self.device = spec, settings, device
        self.family = get_family(spec)
        self.metric = metric if metric is not None else get_metric(settings.metric).load(spec, device)
        self.judges = judges if judges is not None else load_judges(spec, device)
        self.pipe = pipe if pipe is not None else load_pipeline(spec, device=device)
        self.generation = GenerationSettings(
            settings.steps, settings.guidance_scale, settings.resolution, settings.resolution, settings.seed
        )
        self.call_kwargs = pipeline_kwargs(self.pipe, spec, self.generation)
        execution_device = self.pipe._execution_device
        self.chunks = (
            encode_chunks(self.pipe, spec, settings)
            if inputs is None
            else [{k: _on(v, execution_device) for k, v in chunk.items()} for chunk in inputs.chunks]
        )
        self.image_prompts = [p for p in settings.prompts for _ in range(settings.images_per_prompt)]
        self.template = CacheSchedule.all_compute(
            discover_block_groups(self.pipe.transformer), settings.steps, **schedule_metadata(spec)
        ).with_metadata(height=settings.resolution, width=settings.resolution, guidance_scale=settings.guidance_scale)
        self.full_macs = self.macs(self.template)
        self.handle = handle if handle is not None else apply_schedule(self.pipe, self.template)
        self.references: torch.Tensor | None = None if inputs is None else inputs.references
        self.full_seconds_per_image = 0.0 if inputs is None else inputs.seconds_per_image
        if self.references is None:
            # Every family but quality is measured against them, and a latency cost against their seconds.
            self.references, seconds = self.generate(None)
            self.full_seconds_per_image = seconds / settings.num_images
        # The judges' first call (kernels, the uncached images' own features) happens here, not in the time of
        # the first candidate, which a worker pool would otherwise take for a hang.
        family_figures(
            [], self.references, self.references, self.image_prompts, settings.images_per_prompt, self.judges
        )

    def inputs(self) -> SplitInputs:
        """This split's prompt embeddings and references, on the CPU, for evaluators elsewhere."""
        return SplitInputs.on_cpu(self.chunks, self.references, self.full_seconds_per_image)

    def sibling(self, settings: EvaluationSettings, inputs: SplitInputs | None = None) -> Evaluator:
        """An evaluator for other prompts or seeds (a held-out split) on the same resident pipeline, metric and
        hooks: only its prompt embeddings and uncached references are computed anew (or taken from `inputs`).
        Its cost may differ: `--budget-latency` times probe schedules on a latency-cost split of the same
        prompts."""
        same = ("model", "metric", "steps", "guidance_scale", "resolution")
        differing = [name for name in same if getattr(settings, name) != getattr(self.settings, name)]
        if differing:
            raise ValueError(f"a sibling evaluator shares the pipeline; these settings differ: {', '.join(differing)}")
        return Evaluator(
            self.spec,
            settings,
            device=self.device,
            pipe=self.pipe,
            metric=self.metric,
            handle=self.handle,
            inputs=inputs,
            judges=self.judges,
        )

    def _generators(self, count: int) -> list[torch.Generator]:
        """One generator per image, seeded by its index within its prompt: the same noise for every mask."""
        n = self.settings.images_per_prompt
        return [torch.Generator().manual_seed(self.settings.seed + j) for _ in range(count) for j in range(n)]

    def generate(
        self, schedule: CacheSchedule | None, link: PrefixLink | None = None, tape: PrefixTape | None = None
    ) -> tuple[torch.Tensor, float]:
        """All calibration images (N, C, H, W) in [0, 1] for a schedule (None: uncached), and the seconds taken;
        with a `tape`, the steps `link` shares with earlier candidates are taken from it."""
        self.handle.swap(schedule or self.template, link, tape)
        return self._run_chunks()

    def _run_chunks(self) -> tuple[torch.Tensor, float]:
        outputs = []
        start = time.perf_counter()
        for chunk in self.chunks:
            encoded = {k: v for k, v in chunk.items() if k != "count"}
            result = self.pipe(
                **self.family.images_of(encoded, self.settings.images_per_prompt),
                **self.call_kwargs,
                generator=self._generators(chunk["count"]),
                output_type="pt",
            )
            outputs.append(result.images.float().cpu())
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return torch.cat(outputs), time.perf_counter() - start

    @contextlib.contextmanager
    def bare_pipeline(self) -> Iterator[Any]:
        """The pipeline without the evaluator's schedule hooks, for policies (FORA and TaylorSeer bring their
        own hooks) and for calibrations that call the transformer themselves."""
        self.handle.disable()
        try:
            yield self.pipe
        finally:
            self.handle.enable()

    def calibrated(self, config: PolicyConfig) -> PolicyConfig:
        """The policy with its calibration table, measured on this model and settings once, then reused."""
        with self.bare_pipeline() as pipe:
            return calibrated(config, pipe, self.spec, self.generation)

    def generate_with_policy(self, config: PolicyConfig) -> tuple[torch.Tensor, float, float, list[CacheSchedule]]:
        """All calibration images under an online policy, the seconds taken, the MACs per image of what ran
        (the realised masks plus the policy's own arithmetic), and each pipeline call's realised mask."""
        with self.bare_pipeline(), apply_policy(self.pipe, config) as policy:
            images, seconds = self._run_chunks()
        runs = policy.runs
        if len(runs) != len(self.chunks):
            raise PolicyError(f"{config.name} finished {len(runs)} runs for {len(self.chunks)} pipeline calls")
        realised = [policy.realised_schedule(self.template, index) for index in range(len(runs))]
        counts = [chunk["count"] * self.settings.images_per_prompt for chunk in self.chunks]
        paired = zip(realised, runs, counts, strict=True)
        total = sum(self.macs(mask) * n + run.overhead_macs for mask, run, n in paired)
        return images, seconds, total / sum(counts), realised

    def generate_at_steps(self, baseline: FewerSteps) -> tuple[torch.Tensor, float, float]:
        """All calibration images of the uncached pipeline at fewer steps (its scheduler's own timesteps), the
        seconds taken and the MACs per image: those of `baseline.steps` full steps."""
        steps = GenerationSettings(
            baseline.steps, self.settings.guidance_scale, self.settings.resolution, self.settings.resolution
        )
        full_call = self.call_kwargs
        self.call_kwargs = pipeline_kwargs(self.pipe, self.spec, steps)
        try:
            with self.bare_pipeline():
                images, seconds = self._run_chunks()
        finally:
            self.call_kwargs = full_call
        return images, seconds, self.macs(CacheSchedule.all_compute(self.template.groups, baseline.steps))

    def macs(self, schedule: CacheSchedule) -> float:
        return schedule_macs(schedule, self.spec, self.settings)

    def evaluate_many(
        self, candidates: Sequence[CacheSchedule | PolicyConfig | FewerSteps], prefix_bytes: int = 0
    ) -> Iterator[tuple[int, Evaluation]]:
        """Score candidates, yielding (index, evaluation) as each is known. With `prefix_bytes`, schedules run in
        prefix-tree order and compute the steps they share with earlier ones once (see `runtime.prefix`),
        within that memory: the same images, so the same scores. A latency cost is measured on whole runs, so
        it shares nothing, nor does a forecast fill, whose kept terms are not a reused output."""
        shares = prefix_bytes > 0 and self.settings.shares_prefixes
        shared = [i for i, candidate in enumerate(candidates) if shares and _reuses(candidate)]
        for index in sorted(set(range(len(candidates))) - set(shared)):
            yield index, self.evaluate(candidates[index])
        if not shared:
            return
        tape = PrefixTape(prefix_bytes)
        try:
            for position, link in prefix_plan([candidates[i] for i in shared]):
                yield shared[position], self.evaluate(candidates[shared[position]], link, tape)
                tape.drop(link.drops)
        finally:
            self.handle.swap(self.template)

    def evaluate(
        self,
        candidate: CacheSchedule | PolicyConfig | FewerSteps,
        link: PrefixLink | None = None,
        tape: PrefixTape | None = None,
    ) -> Evaluation:
        """Score a schedule, an online policy (its MACs are what it ran, overhead included) or the uncached
        pipeline at fewer steps, in every family (`families`). A schedule whose shared prefix came from a
        `tape` has no latency of its own."""
        start = time.perf_counter()
        replayed = 0 if tape is None else tape.replayed_steps
        if isinstance(candidate, PolicyConfig):
            images, seconds, macs, _ = self.generate_with_policy(candidate)
        elif isinstance(candidate, FewerSteps):
            images, seconds, macs = self.generate_at_steps(candidate)
        elif link is None and candidate.compute_fraction == 1.0 and self.references is not None:
            # The uncached model: its images are this split's references, generated once already.
            images, macs = self.references, self.full_macs
            seconds = self.full_seconds_per_image * self.settings.num_images
        else:
            (images, seconds), macs = self.generate(candidate, link, tape), self.macs(candidate)
        per_prompt = self.settings.images_per_prompt
        units = self.metric.unit_scores(images, self.image_prompts, self.references, per_prompt).double().tolist()
        families = family_figures(units, images, self.references, self.image_prompts, per_prompt, self.judges)
        if self.settings.objective == "fidelity":
            units = fidelity_prompt_scores(families["psnr_db"], per_prompt)
        seconds_per_image = seconds / self.settings.num_images
        shared = tape is not None and tape.replayed_steps > replayed
        latency_cost = self.settings.cost == "latency"
        cost = seconds_per_image / self.full_seconds_per_image if latency_cost else macs / self.full_macs
        return Evaluation(
            quality_loss=float(1.0 - sum(units) / len(units)),
            cost=float(cost),
            macs=macs,
            latency_s=None if shared else seconds_per_image,
            prompt_scores=[float(s) for s in units],
            figures=self._figures(images, families),
            wall_time_s=time.perf_counter() - start,
        )

    def _figures(self, images: torch.Tensor, families: dict[str, list[float]]) -> dict[str, Any]:
        figures = self.metric.extra_figures(images, self.image_prompts, self.references)
        if self.settings.reference_figures:
            figures.update({key: mean(families[key]) for key in ("psnr_db", "ssim")})
        return {**figures, FAMILIES_KEY: families}
