"""What `compare` puts side by side: every method as the candidates it scores.

- `learned`, `constructed`, `refined`: a search's final front (`run`) and schedule files (`schedules`), named by
  how they were made (the run's `strategy`: evolve, construct or refine; a file by its provenance).
- `fora`: FORA every N steps, N = 2…10 (the same masks the search seeds from, so their held-out scores are
  shared with it).
- `fewer-steps`: the uncached pipeline at k = 2…N−1 steps, its scheduler's own timesteps (the baseline everyone
  thinks of first).
- each online policy: swept over the knobs its module names in `SWEEP`, from (nearly) computing every step to
  caching much: a grid for a one-knob policy, an Optuna study (multi-objective, its own SQLite storage,
  resumable) for one with several knobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..fewer_steps import FewerSteps
from ..heuristics import fora
from ..policies import KnobRange, PolicyConfig, policy_config, policy_names, policy_sweep
from ..schedule import BlockGroup, CacheSchedule

FORA_INTERVALS = range(2, 11)
# The FORA every-N method is the heuristic masks; the `fora` policy is the same rule, so it is not swept again.
POLICY_METHODS = tuple(name for name in policy_names() if name != "fora")
# Our schedules, by the strategy that made them.
STRATEGY_METHODS = {"evolve": "learned", "construct": "constructed", "refine": "refined"}
OUR_METHODS = tuple(STRATEGY_METHODS.values())
METHODS = (*OUR_METHODS, "fora", "fewer-steps", *POLICY_METHODS)


@dataclass(frozen=True)
class Setting:
    """One candidate of one method: a mask or a policy, and a short label for tables and plots."""

    method: str
    label: str
    candidate: CacheSchedule | PolicyConfig | FewerSteps


def fora_settings(groups: tuple[BlockGroup, ...], steps: int) -> list[Setting]:
    return [Setting("fora", f"FORA-{n}", fora(groups, steps, n)) for n in FORA_INTERVALS]


def fewer_steps_settings(steps: int) -> list[Setting]:
    return [Setting("fewer-steps", FewerSteps(k).label, FewerSteps(k)) for k in range(2, steps)]


def learned_settings(front: list[CacheSchedule], files: list[tuple[Path, CacheSchedule]]) -> list[Setting]:
    """The front's schedules (cheapest first) and the given schedule files, each under its method."""
    ordered = sorted(front, key=lambda s: s.compute_fraction)
    return [Setting(our_method(s), f"front {i + 1}/{len(ordered)}", s) for i, s in enumerate(ordered)] + [
        Setting(our_method(schedule), path.stem, schedule) for path, schedule in files
    ]


def our_method(schedule: CacheSchedule) -> str:
    """How one of our schedules was made: a search's strategy, or construction for a file written by it."""
    provenance = schedule.provenance
    if provenance.get("method") == "constructed":
        return "constructed"
    return STRATEGY_METHODS.get(str(provenance.get("strategy", "evolve")), "learned")


def knob_text(knobs: dict[str, float]) -> str:
    return " ".join(f"{name}={value:g}" for name, value in knobs.items())


def grid_settings(name: str, points: int) -> list[Setting]:
    """A one-knob policy at `points` values across its sweep range."""
    ((knob, span),) = policy_sweep(name).items()
    return [Setting(name, knob_text({knob: v}), policy_config(name, **{knob: v})) for v in span.grid(points)]


def suggest(trial: object, knob: str, span: KnobRange) -> float:
    """An Optuna trial's value for one knob within its sweep range."""
    if span.integer:
        return trial.suggest_int(knob, int(span.low), int(span.high))  # type: ignore[attr-defined]
    return trial.suggest_float(knob, span.low, span.high, log=span.log)  # type: ignore[attr-defined]


def study_settings(
    name: str,
    trials: int,
    storage: Path,
    study_name: str,
    seed: int,
    score: Callable[[Setting], tuple[float, float]],
) -> Iterator[Setting]:
    """A several-knob policy explored by a multi-objective Optuna study (cost, loss), kept in its own SQLite
    file so that an interrupted compare resumes it: only the trials still missing are run. `score` scores a
    setting (through the evaluation memo) and returns its objectives; every setting yielded has been scored."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage}",
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(trials, 8))),
        load_if_exists=True,
    )
    sweep = policy_sweep(name)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            # A trial of an earlier, interrupted compare: its score comes back from the memo.
            setting = Setting(name, knob_text(trial.params), policy_config(name, **trial.params))
            score(setting)
            yield setting
    for _ in range(max(0, trials - len(study.trials))):
        trial = study.ask()
        knobs = {knob: suggest(trial, knob, span) for knob, span in sweep.items()}
        setting = Setting(name, knob_text(knobs), policy_config(name, **knobs))
        study.tell(trial, score(setting))
        yield setting
