"""Ray workers that each keep a pipeline loaded, fed by our own dispatch loop over `ray.wait`.

Not `ray.util.ActorPool`: in Ray 2.60 it drops an actor for good when it dies, even one Ray is restarting.
Every worker is an actor with unlimited restarts (a restart re-runs `__init__`, so the pipeline is loaded
again) and no task retries (a task that kills its process must not burn restarts); this loop decides what
happens next:

- candidates go to whichever worker is free, the costliest first (results are used in the search's order,
  so the order of dispatch changes no record and no archive); with shared prefixes, masks go in groups of
  neighbours in prefix-tree order, one group per worker, so that each worker computes the first steps its
  masks agree on once (`runtime.prefix`: the same images, so the same records);
- a worker that dies mid-task is restarted by Ray and takes work again once it answers; each candidate of
  its task (or of a task that raised) counts a try and goes back to the head of the queue alone, so the
  next free workers take them and a mask that kills its worker is told apart from the rest of its group;
- a candidate that killed its worker or raised on `max_attempts` tries is a failure: reported, not retried;
- a task running past `hang_factor` × the median time per image so far, times the images it generates
  (never less than `min_timeout_s` per candidate), is a hang: its worker is killed, which Ray turns into a
  restart and this loop into a death. Per image, since splits differ in images per candidate (a held-out
  candidate may generate over ten times what a calibration one does) and a task may hold several. A task is
  sent once its worker holds the split, so computing a split's uncached references never counts as a hang.

Each split's prompt embeddings and uncached references are computed once, by worker 0, and reach the other
workers through the object store; those then drop their text encoders (PixArt's T5-XXL is about 9.5 GB in
fp16, its transformer 0.6 B parameters). Worker 0 encodes the prompts of every split the run may need at the
start and then drops its encoders too; a worker restarted by Ray loads them again.

Which worker scored a candidate never changes its record: every worker generates from the same seeds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation import EvaluationSettings, SplitInputs
from ..models import ModelSpec, get_model
from ..options import RAY_EXTRA
from ..runtime.prefix import prefix_groups
from ..schedule import CacheSchedule
from ..store import EvaluationRecord
from .base import (
    Candidate,
    EvaluationPool,
    OnOutcome,
    PoolError,
    PoolStatus,
    candidate_of,
    candidate_text,
    failure_of,
    resident_mib,
)
from .local import LocalPool

# Comma-separated digests whose evaluation ends the worker's process ("hang:DIGEST": never returns): how
# tests and drills show a mask that kills or hangs its workers.
FAULT_VARIABLE = "ECAD_SEARCH_FAULT_DIGESTS"
POLL_S = 1.0


def import_ray() -> Any:
    """Ray, or a one-line error that names the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise PoolError(f"workers need Ray, which is not installed: {RAY_EXTRA}") from err
    return ray


class EvaluationWorker:
    """What runs inside one actor: a `LocalPool` on the actor's own pipeline. It never touches the database."""

    def __init__(self, model: str, device: str, prefix_mib: int = 0) -> None:
        self.pool = LocalPool(get_model(model), device, prefix_mib=prefix_mib)
        faults = [entry.partition(":") for entry in os.environ.get(FAULT_VARIABLE, "").split(",") if entry]
        self.faults = {(rest or kind): ("hang" if rest and kind == "hang" else "crash") for kind, _, rest in faults}

    def pid(self) -> int:
        return os.getpid()

    def prepare(self, settings: EvaluationSettings) -> float:
        return self.pool.prepare(settings)

    def device_label(self) -> str:
        return self.pool.device_label()

    def split_inputs(self, settings: EvaluationSettings, encoded: SplitInputs | None = None) -> SplitInputs:
        """A split's full inputs: computed here, from its prompt embeddings when `encoded` gives them."""
        return self.pool.evaluator(settings, encoded).inputs()

    def encode(self, settings: EvaluationSettings) -> SplitInputs:
        return self.pool.encode(settings)

    def release_text_encoders(self) -> list[str]:
        return self.pool.release_text_encoders()

    def adopt(self, settings: EvaluationSettings, inputs: SplitInputs, release_text_encoders: bool) -> None:
        """Take a split's inputs from the worker that computed them; then the text encoders can go."""
        self.pool.evaluator(settings, inputs)
        if release_text_encoders:
            self.pool.release_text_encoders()

    def resident_mib(self) -> tuple[float, float]:
        return resident_mib()

    def lane_gram(self, settings: EvaluationSettings) -> dict[str, Any]:
        return self.pool.lane_gram(settings)

    def evaluate(self, settings: EvaluationSettings, texts: dict[str, str]) -> list[EvaluationRecord]:
        """Score candidates given as `candidate_text` by digest (genomes, or policy documents), together: masks
        share the first steps they agree on, within the pool's prefix memory. Records in the order given."""
        for digest in texts:
            if self.faults.get(digest) == "crash":
                os._exit(3)
            while self.faults.get(digest) == "hang":
                time.sleep(1)
        template = self.pool.evaluator(settings).template
        records: dict[str, EvaluationRecord] = {}
        candidates = {digest: candidate_of(text, template) for digest, text in texts.items()}
        self.pool.evaluate(settings, candidates, lambda record: records.__setitem__(record.digest, record))
        return [records[digest] for digest in texts]


@dataclass
class _Task:
    worker: int
    digests: tuple[str, ...]
    images: int
    started: float
    killed: bool = False


class RayPool(EvaluationPool):
    """`workers` actors on a Ray cluster: joined at `address` ("auto", "ray://host:port"), or a local one
    started for them. GPU actors take `gpus_per_worker` each where the cluster has GPUs, else one CPU each.
    With `prefix_mib`, each worker shares the first steps of the masks it is given together within that
    memory."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        workers: int,
        address: str | None = None,
        gpus_per_worker: float = 1.0,
        max_attempts: int = 3,
        hang_factor: float = 10.0,
        min_timeout_s: float = 60.0,
        prefix_mib: int = 0,
    ) -> None:
        self.ray = import_ray()
        self.prefix_mib = prefix_mib
        self.max_attempts, self.hang_factor, self.min_timeout_s = max_attempts, hang_factor, min_timeout_s
        _connect(self.ray, address, workers)
        gpus = self.ray.cluster_resources().get("GPU", 0.0)
        self.workers = workers or int(gpus // gpus_per_worker)
        if self.workers < 1:
            raise PoolError(f"the Ray cluster at {address} has no GPU for a worker: give `workers` for CPU workers")
        on_gpu = gpus >= gpus_per_worker
        options: dict[str, Any] = {
            "num_gpus": gpus_per_worker if on_gpu else 0,
            "num_cpus": 0 if on_gpu else 1,
            "max_restarts": -1,
            "max_task_retries": 0,
        }
        if FAULT_VARIABLE in os.environ:
            options["runtime_env"] = {"env_vars": {FAULT_VARIABLE: os.environ[FAULT_VARIABLE]}}
        actor_class = self.ray.remote(EvaluationWorker).options(**options)
        device = "cuda" if on_gpu else "cpu"
        self.actors = [actor_class.remote(spec.name, device, prefix_mib) for _ in range(self.workers)]
        self.idle = deque(range(self.workers))
        # Each split's inputs (computed once, by worker 0), the prompt embeddings of the splits to come, and
        # which splits each worker holds.
        self.inputs: dict[str, Any] = {}
        self.encoded: dict[str, Any] = {}
        self.loaded: list[set[str]] = [set() for _ in range(self.workers)]
        # Loads queued but not yet waited for, by (worker, split key): `prepare` queues them on every worker.
        self.loading: dict[tuple[int, str], Any] = {}
        self.restarting: dict[Any, int] = {}
        self.running: dict[Any, _Task] = {}
        self.restarts = 0
        self.seconds_per_image: list[float] = []

    def prepare(self, settings: EvaluationSettings, upcoming: Sequence[EvaluationSettings] = ()) -> float:
        """Every worker loads the split (its inputs computed once). Worker 0 also encodes the prompts of the
        upcoming splits and then drops its text encoders too; their references come when first needed.
        Returns the uncached seconds per image."""
        for worker in range(self.workers):
            self._load(worker, settings)
        for split in upcoming:
            self.encoded.setdefault(split.key(), self.actors[0].encode.remote(split))
        if upcoming:
            self.actors[0].release_text_encoders.remote()
        return float(self.ray.get(self.actors[0].prepare.remote(settings)))

    def lane_gram(self, settings: EvaluationSettings) -> dict[str, Any]:
        """On the first worker, once its split is loaded (a JSON-ready result: lists and numbers)."""
        self._ready(0, settings)
        return dict(self.ray.get(self.actors[0].lane_gram.remote(settings)))

    def device_label(self) -> str:
        """Worker 0's device: every worker takes the same share of the same kind of GPU."""
        return str(self.ray.get(self.actors[0].device_label.remote()))

    def resident_mib(self) -> list[tuple[float, float]]:
        """Each worker's host and GPU memory in MiB."""
        return [tuple(mib) for mib in self.ray.get([actor.resident_mib.remote() for actor in self.actors])]

    def _load(self, worker: int, settings: EvaluationSettings) -> Any | None:
        """Queue the split on the worker before its first candidate of it: worker 0 computes the inputs, the
        others receive them through the object store (a task on an actor runs after those queued before).
        Returns what the worker is loading (None: it holds the split)."""
        key = settings.key()
        if key in self.loaded[worker]:
            return None
        loading = None
        if key not in self.inputs:
            loading = self.inputs[key] = self.actors[0].split_inputs.remote(settings, self.encoded.get(key))
            self.loaded[0].add(key)
            self.loading[0, key] = loading
        if worker != 0:
            loading = self.actors[worker].adopt.remote(settings, self.inputs[key], True)
        self.loaded[worker].add(key)
        if loading is not None:
            self.loading[worker, key] = loading
        return loading

    def _ready(self, worker: int, settings: EvaluationSettings) -> None:
        """Load the split on the worker and wait until it holds it (a load `prepare` queued too), so that a
        task's clock (its hang timeout) counts only its own images, not the uncached references of a split it
        is the first to score, nor the loading of the worker's judges. The inputs stay in the object store (not
        fetched here)."""
        self._load(worker, settings)
        loading = self.loading.pop((worker, settings.key()), None)
        if loading is not None:
            self.ray.wait([loading], fetch_local=False)

    @property
    def status(self) -> PoolStatus:
        alive = self.workers - len(self.restarting)
        return PoolStatus(self.workers, alive, len(self.running), self.restarts)

    def evaluate(
        self, settings: EvaluationSettings, candidates: Mapping[str, Candidate], on_outcome: OnOutcome
    ) -> None:
        queue = deque(self._groups(settings, candidates))
        texts = {digest: candidate_text(candidate) for digest, candidate in candidates.items()}
        attempts: Counter[str] = Counter()
        while queue or self.running:
            while queue and self.idle:
                worker, digests = self.idle.popleft(), queue.popleft()
                self._ready(worker, settings)
                ref = self.actors[worker].evaluate.remote(settings, {digest: texts[digest] for digest in digests})
                images = len(digests) * settings.num_images
                self.running[ref] = _Task(worker, digests, images, time.monotonic())
            ready, _ = self.ray.wait([*self.running, *self.restarting], num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref in self.restarting:
                    self._back_from_restart(ref)
                    continue
                task = self.running.pop(ref)
                error = self._result(ref, task, on_outcome)
                if error is None:
                    continue
                for digest in reversed(task.digests):
                    attempts[digest] += 1
                    if attempts[digest] >= self.max_attempts:
                        on_outcome(failure_of(digest, candidates[digest], error, attempts[digest]))
                    else:
                        queue.appendleft((digest,))
            self._kill_hung()
            if len(self.restarting) == self.workers and not self.running and queue:
                self._wait_for_a_worker()

    def _groups(self, settings: EvaluationSettings, candidates: Mapping[str, Candidate]) -> list[tuple[str, ...]]:
        """What each task scores, costliest first (by compute fraction; a policy's is unknown until it runs, so
        it goes first), so that a generation does not end waiting on one slow task: masks in one group per
        worker when they share prefixes (as the split allows), else one by one."""
        masks = [d for d, c in candidates.items() if isinstance(c, CacheSchedule)]
        groups = [(d,) for d, c in candidates.items() if not isinstance(c, CacheSchedule)]
        if self.prefix_mib and settings.shares_prefixes:
            order = prefix_groups([candidates[d] for d in masks], self.workers)
            groups += [tuple(masks[i] for i in group) for group in order]
        else:
            groups += [(d,) for d in masks]
        return sorted(groups, key=lambda group: -sum(getattr(candidates[d], "compute_fraction", 1.0) for d in group))

    def _result(self, ref: Any, task: _Task, on_outcome: OnOutcome) -> str | None:
        """Report a finished task's records; on a death or an error, say what happened (the caller retries)."""
        exceptions = self.ray.exceptions
        try:
            records = self.ray.get(ref)
        except exceptions.RayActorError as err:
            self.restarts += 1
            self._forget(task.worker)
            self.restarting[self.actors[task.worker].pid.remote()] = task.worker
            return "its worker was hung and killed" if task.killed else f"its worker died: {_last_line(err)}"
        except exceptions.RayTaskError as err:
            self.idle.append(task.worker)
            return _last_line(err)
        self.idle.append(task.worker)
        self.seconds_per_image.append((time.monotonic() - task.started) / task.images)
        for record in records:
            on_outcome(record)
        return None

    def _forget(self, worker: int) -> None:
        """A restarted worker holds no split; worker 0's results may be lost with it, so they are recomputed."""
        self.loaded[worker].clear()
        self.loading = {place: ref for place, ref in self.loading.items() if place[0] != worker}
        if worker == 0:
            self.inputs.clear()

    def _back_from_restart(self, probe: Any) -> None:
        worker = self.restarting.pop(probe)
        try:
            self.ray.get(probe)
        except self.ray.exceptions.RayActorError:
            self.restarting[self.actors[worker].pid.remote()] = worker
            return
        self.idle.append(worker)

    def _wait_for_a_worker(self) -> None:
        """Every worker is restarting: block until one answers (Ray restarts them without limit)."""
        ready, _ = self.ray.wait(list(self.restarting), num_returns=1)
        self._back_from_restart(ready[0])

    def _kill_hung(self) -> None:
        if not self.seconds_per_image:
            return
        per_image = self.hang_factor * statistics.median(self.seconds_per_image)
        now = time.monotonic()
        for task in self.running.values():
            timeout = max(self.min_timeout_s * len(task.digests), per_image * task.images)
            if not task.killed and now - task.started > timeout:
                task.killed = True
                self.ray.kill(self.actors[task.worker], no_restart=False)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def _connect(ray: Any, address: str | None, workers: int) -> None:
    """Join the cluster at `address` (or the one a Ray job runs in), else start a local one sized to the
    workers (token auth off: it listens on this machine only). An existing connection is reused."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                address="local",
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="WARNING",
            )
    except ConnectionError as err:
        raise PoolError(
            f"no Ray cluster at {address}: start one with `ray start --head`, or leave out `ray_address`"
        ) from err


def _last_line(error: BaseException) -> str:
    """A remote error's last line: Ray puts the traceback first and the error itself last."""
    text = str(error).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(error).__name__)[:500]
