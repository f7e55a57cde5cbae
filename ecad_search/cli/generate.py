"""`generate`, `grid`, `calibrate` and `profile`: running a pipeline, with a schedule or an online policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models import block_groups, check_schedule_fits, get_model
from ..options import check_generate_steps, check_guidance, check_schedule_steps, check_seed
from ..text import macs_text
from .common import (
    ModelOption,
    UsageError,
    app,
    console,
    friendly,
    metadata_of,
    needs,
    png_bytes,
    quiet_libraries,
    spec_at,
    viewable,
    with_macs,
)


@app.command()
@friendly
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="text prompt")],
    model: ModelOption = "digits",
    schedule: Annotated[Path | None, typer.Option(help="schedule JSON (ours or ECAD's); none = no caching")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the schedule's or model's)")] = None,
    seed: int = 0,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    out: Annotated[Path, typer.Option(help="output PNG")] = Path("image.png"),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
    compare: Annotated[bool, typer.Option(help="also time the uncached run and report the speedup")] = False,
    policy: Annotated[
        str | None,
        typer.Option(help="an online policy instead of a schedule: its name (`ecad-search policies`) or a policy JSON"),
    ] = None,
    knob: Annotated[
        list[str] | None, typer.Option("--set", help="a policy knob, KNOB=VALUE (repeatable)", show_default=False)
    ] = None,
    realised: Annotated[Path | None, typer.Option(help="save what the policy ran as a schedule JSON")] = None,
    save_policy: Annotated[Path | None, typer.Option(help="save the policy and its knobs as a policy JSON")] = None,
) -> None:
    """Generate one image, optionally following a schedule or an online policy; print wall time, MACs and the
    fraction saved (for a policy: of what it actually ran, its own arithmetic included). A policy that needs a
    calibration table is calibrated first (once per model and settings; `ecad-search calibrate`)."""
    from ..formats import load_schedule
    from ..models import require_model

    if policy and schedule:
        raise UsageError("give --schedule or --policy, not both")
    if (knob or realised or save_policy) and not policy:
        raise UsageError("--set, --realised and --save-policy go with --policy")
    policy_settings = _policy(policy, knob or []) if policy else None
    cached = load_schedule(schedule) if schedule else None
    spec = spec_at(model, resolution)
    require_model(spec)
    from ..cost import estimate_macs
    from ..files import write_atomic
    from ..generation import GenerationSettings, load_pipeline, resolve_device
    from ..generation import generate as run
    from ..schedule import CacheSchedule

    if cached:
        check_schedule_fits(cached, spec, str(schedule))
    if cached and steps is not None and steps != cached.num_steps:
        raise UsageError(f"--steps {steps} differs from the schedule's {cached.num_steps} steps; drop --steps")
    settings = GenerationSettings.for_model(
        spec,
        steps=check_generate_steps(steps) if steps is not None else (cached.num_steps if cached else None),
        guidance_scale=None if guidance is None else check_guidance(guidance),
        resolution=resolution,
        seed=check_seed(seed),
    )
    quiet_libraries()
    plain = CacheSchedule.all_compute(block_groups(spec), settings.steps, **metadata_of(spec))
    pipe = load_pipeline(spec, device=resolve_device(device))
    overhead = 0.0
    if policy_settings is not None:
        from ..formats.policy import save_policy as write_policy
        from ..policies import apply_policy
        from ..policies.calibration import calibrated

        policy_settings = calibrated(policy_settings, pipe, spec, settings)
        with apply_policy(pipe, policy_settings) as handle:
            images, seconds = run(pipe, spec, [prompt], settings)
        cached, overhead = handle.realised_schedule(plain), handle.runs[-1].overhead_macs
        if realised:
            from ..formats import save_schedule

            save_schedule(with_macs(cached, spec), realised)
        if save_policy:
            write_policy(policy_settings, save_policy)
        ran = handle.decisions[-1]
        console.print(
            f"{policy_settings.name}: computed {sum(ran)} of {len(ran)} steps (the others {policy_settings.skipped}), "
            f"{cached.compute_fraction:.1%} of the block components; its own arithmetic {macs_text(overhead)}"
        )
    else:
        images, seconds = run(pipe, spec, [prompt], settings, schedule=cached)
    image = viewable(images[0])
    write_atomic(out, png_bytes(image))
    size = {"height": settings.height, "width": settings.width}
    full = estimate_macs(plain, spec, **size)
    used = estimate_macs(cached, spec, **size) + overhead if cached else full
    console.print(f"wrote {out} ({image.size[0]}x{image.size[1]})")
    console.print(f"wall time {seconds:.3f} s; {macs_text(used)}; {1 - used / full:.1%} of MACs saved")
    if compare and cached:
        _, base = run(pipe, spec, [prompt], settings)
        console.print(f"uncached {base:.3f} s: speedup {base / seconds:.2f}x (MACs predict {full / used:.2f}x)")


@app.command()
@friendly
def grid(
    model: ModelOption = "digits",
    schedule: Annotated[Path | None, typer.Option(help="schedule JSON; none = no caching")] = None,
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="output PNG")] = Path("digits.png"),
) -> None:
    """All ten digits of the digits model in one image (with or without a schedule)."""
    from ..files import write_atomic
    from ..formats import load_schedule
    from ..generation import GenerationSettings, load_pipeline
    from ..generation import generate as run
    from ..models.digits import DIGIT_PROMPTS, digit_grid

    spec = get_model(model)
    if spec.family != "digits":
        raise UsageError(f"grid draws the ten digits of a digits model; {spec.name} is a {spec.family} model")
    cached = load_schedule(schedule) if schedule else None
    if cached:
        check_schedule_fits(cached, spec, str(schedule))
    settings = GenerationSettings.for_model(spec, steps=cached.num_steps if cached else None, seed=check_seed(seed))
    quiet_libraries()
    images, seconds = run(load_pipeline(spec), spec, DIGIT_PROMPTS, settings, schedule=cached)
    write_atomic(out, png_bytes(digit_grid(images, factor=16)))
    console.print(f"wrote {out} in {seconds:.2f} s")


@app.command()
@friendly
def calibrate(
    policy: Annotated[str, typer.Argument(help="teacache, magcache or sencache")],
    model: ModelOption = "digits",
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt file (default: the model's calibration prompts)")] = None,
    out: Annotated[Path | None, typer.Option(help="calibration folder (default: the user cache folder)")] = None,
    refresh: Annotated[bool, typer.Option(help="measure again even when a calibration is stored")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Measure the table a policy needs on this model (once per step count, resolution and guidance) and keep
    it as JSON; `generate --policy` and the evaluator use it, and a second call reuses it."""
    from ..generation import GenerationSettings, load_pipeline, resolve_device
    from ..models import require_model
    from ..policies.calibration import calibratable
    from ..policies.calibration import calibrate as measure
    from ..prompts import load_prompts

    if policy not in calibratable():
        raise UsageError(f"unknown or uncalibrated policy '{policy}': calibrate one of {', '.join(calibratable())}")
    spec = spec_at(model, resolution)
    require_model(spec)
    texts = list(load_prompts(prompts)) if prompts else None
    settings = GenerationSettings.for_model(
        spec,
        steps=None if steps is None else check_generate_steps(steps),
        guidance_scale=None if guidance is None else check_guidance(guidance),
        resolution=resolution,
    )
    quiet_libraries()
    with console.status(f"calibrating {policy} on {spec.name}"):
        pipe = load_pipeline(spec, device=resolve_device(device))
        result = measure(policy, pipe, spec, settings, folder=out, prompts=texts, refresh=refresh)
    verb = "measured" if result.measured else "reused (same model and settings; --refresh measures again)"
    console.print(f"{policy} on {spec.name}, {settings.steps} steps: {verb}\n{result.path}")


@app.command()
@friendly
def profile(
    model: ModelOption = "digits",
    prompts: Annotated[Path | None, typer.Option(help="prompt file (default: the model's calibration prompts)")] = None,
    images_per_prompt: Annotated[int, typer.Option(help="seeds per prompt")] = 4,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="output PNG heat map (a JSON of the figures is written beside it)")] = Path(
        "change.png"
    ),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """How much each block component's output changes between steps: what a learned schedule can exploit."""
    needs("search")
    import json

    from ..models import require_model
    from ..options import MAX_IMAGES_PER_PROMPT, check_range
    from ..prompts import default_prompt_file, load_prompts

    spec = get_model(model)
    require_model(spec)
    texts = load_prompts(prompts or default_prompt_file(spec.family))
    check_range("--images-per-prompt", images_per_prompt, 1, MAX_IMAGES_PER_PROMPT)
    num_steps = spec.default_steps if steps is None else check_schedule_steps(steps)
    from ..files import write_atomic
    from ..generation import GenerationSettings, load_pipeline, resolve_device
    from ..generation import generate as run
    from ..plots import change_heatmap
    from ..runtime.profile import ChangeProfiler

    quiet_libraries()
    settings = GenerationSettings.for_model(spec, steps=num_steps, seed=check_seed(seed))
    pipe = load_pipeline(spec, device=resolve_device(device))
    batch = [text for text in texts for _ in range(images_per_prompt)]
    with ChangeProfiler(pipe.transformer, block_groups(spec), num_steps) as profiler:
        _, seconds = run(pipe, spec, batch, settings, output_type="pt")
    figures = profiler.profile(len(batch))
    write_atomic(out.with_suffix(".json"), json.dumps({"model": spec.name, **figures.to_dict()}, indent=1))
    title = f"{spec.name}: step-to-step change of each component, {len(batch)} images, {num_steps} steps"
    change_heatmap(figures, out, title)
    console.print(f"wrote {out} and {out.with_suffix('.json')} ({len(batch)} images in {seconds:.1f} s)")


def _policy(name: str, knobs: list[str]) -> Any:
    """The policy's config: a name or a policy file, with `--set KNOB=VALUE` pairs over its knobs (values read as
    JSON where they parse: 0.1, [1, 2])."""
    from ..policies import policy_config

    base: dict[str, Any] = {}
    if name.endswith(".json"):
        from ..formats.policy import load_policy

        loaded = load_policy(name)
        name, base = loaded.name, loaded.knobs()
    values: dict[str, Any] = {}
    for pair in knobs:
        key, sign, text = pair.partition("=")
        if not sign or not key:
            raise UsageError(f"--set {pair}: write KNOB=VALUE, e.g. --set threshold=0.1")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return policy_config(name, **{**base, **values})
