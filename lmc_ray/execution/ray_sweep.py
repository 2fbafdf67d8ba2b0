"""The Ray layer: actors hold resident models, the driver fans out pairs and writes the store.

Thin on purpose: what is computed lives in Residents/Core (no Ray); this module only decides where it
runs, keeps a bounded amount of work in flight, and streams each finished pair into the store.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from pathlib import Path

import ray
import torch
import yaml

from . import ray_private, schedule
from ..config import ConfigError, SweepConfig
from ..errors import SweepError, first_line
from .executor import RunReport
from ..compute.work import Endpoint, EndpointResult, Pair, PairResult, Plane, PlaneResult
from .plan import Plan
from ..progress import bar as progress_bar, track
from .recorder import Recorder
from ..compute.core import use_threads
from ..compute.residents import Residents

log = logging.getLogger("lmc_ray")


def run_id(store: str) -> str:
    """What the metrics are tagged with instead of the store's path: a node's Prometheus endpoint is readable by
    whoever reaches the port, and paths (a user's folders, bucket names) are not theirs to read."""
    return hashlib.sha256(store.encode()).hexdigest()[:12]


class _Metrics:
    """Custom metrics for the dashboard's Metrics view (Prometheus names ray_lmc_ray_*), tagged by run_id."""

    def __init__(self, store: str, total: int):
        from ray.util.metrics import Counter, Gauge

        tags = {"run": run_id(store)}
        log.info("metrics: tagged run=%s", tags["run"])
        self.pairs_done = Counter("lmc_ray_pairs_done", "interpolation pairs stored", tag_keys=("run",))
        self.pairs_done.set_default_tags(tags)
        self.examples = Gauge("lmc_ray_examples_per_second", "examples evaluated per second, whole sweep",
                              tag_keys=("run",))
        self.examples.set_default_tags(tags)
        self.total = Gauge("lmc_ray_pairs_total", "pairs this run computes", tag_keys=("run",))
        self.total.set_default_tags(tags)
        self.n_total = total
        self.start = time.monotonic()
        self.evaluated = 0

    def pair(self, examples: int) -> None:
        self.pairs_done.inc()
        self.total.set(self.n_total)  # re-sent with each pair: a gauge set once, early, was not exported
        self.evaluated += examples
        self.examples.set(self.evaluated / max(1e-9, time.monotonic() - self.start))


@ray.remote
class ModelActor:
    """Holds its block of models and computes what it is sent. Every call carries the eval data's refs, and the
    models are loaded on the first: constructor arguments in the object store are what a restarted actor may
    not find again (Ray logs an error for them, ray-project/ray#53727), while a call brings its own."""

    def __init__(self, cfg: SweepConfig, indices: list[int], labels: list[str], revisions: list[str],
                 base_revision: str | None, threads: int, number: int):
        from ray.util.metrics import Counter

        use_threads(threads)
        self.args, self.res = (cfg, indices, labels, revisions, base_revision), None
        self.busy = Counter("lmc_ray_actor_busy_seconds", "seconds an actor spent computing",
                            tag_keys=("run", "actor"))
        self.busy.set_default_tags({"run": run_id(cfg.store), "actor": str(number)})  # no model paths (run_id)
        self.busy_seconds = 0.0  # since this incarnation started

    def _residents(self, datas: list) -> Residents:
        if self.res is None:  # refs in a list arrive unresolved
            cfg, indices, labels, revisions, base_revision = self.args
            self.res = Residents(cfg, indices, labels, ray.get(datas), revisions, base_revision)
        return self.res

    def pid(self, datas: list) -> int:
        """This incarnation's process id, once its models are loaded (bad input, NaN weights, is raised here)."""
        self._residents(datas)
        return os.getpid()

    def _timed(self, fn, *args):
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.busy.inc(time.monotonic() - start)
            self.busy_seconds += time.monotonic() - start

    def busy_time(self) -> float:
        return self.busy_seconds

    def endpoint(self, e: Endpoint, datas: list) -> EndpointResult:
        return self._timed(self._residents(datas).endpoint, e)

    def weights(self, i: int, datas: list):
        return self._residents(datas).export(i)

    def pair(self, pair: Pair, end_losses: tuple[float, float], partner: list, datas: list) -> PairResult:
        # The partner's ref arrives wrapped in a list so Ray does not fetch it unless it is needed.
        return self._timed(self._residents(datas).pair, pair, end_losses, lambda: ray.get(partner[0]))

    def plane(self, plane: Plane, partners: list, datas: list) -> PlaneResult:
        """partners: [ref to b's weights or None, the same for c] (None: resident here)."""
        return self._timed(self._residents(datas).plane, plane, lambda: ray.get(partners[0]),
                           lambda: ray.get(partners[1]))


def init() -> str:
    """Join the cluster this job runs in (RAY_ADDRESS, `ray submit`, `ray job submit`) or start one.

    Returns the dashboard address, so users know where to watch.
    """
    if not ray.is_initialized():
        logging.getLogger(ray_private.TOKEN_LOG).addFilter(_quiet)
        address = _address()
        with ray_private.loopback_only(address == "local"):
            ray.init(address=address, logging_level=logging.WARNING)
    return dashboard()


def _quiet(record: logging.LogRecord) -> bool:
    """Ray's notice, on every start, that token authentication is on (as it should be): left out of what the
    user reads. Its warning that authentication is off is kept."""
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _address(warn: bool = True) -> str | None:
    """What to pass to ray.init(), after checking the cluster it would join: Ray retries a dead address for
    many minutes. "local" when a new instance would start on this machine.

    An address the user gave (RAY_ADDRESS) that nothing answers is an error; one Ray found by itself in
    /tmp/ray/ray_current_cluster (a `ray start` cluster that died without `ray stop`) is reported (`warn`) and a
    local instance started instead, as if it were not there. A live one is left for Ray to find (None): Ray
    sends its token only to a cluster it found itself, never to an address it was handed.
    """
    given = os.environ.get("RAY_ADDRESS")
    try:
        address = ray_private.address_from_environment()
    except ConnectionError:  # RAY_ADDRESS=auto and no cluster to be found
        raise ConfigError(f"RAY_ADDRESS={given}: no running Ray cluster found; start one (`ray start --head`) or "
                          "unset RAY_ADDRESS to run on a local instance") from None
    if address in (None, "local"):
        return "local"
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return None
    except (OSError, ValueError):
        pass
    if given:
        raise ConfigError(f"RAY_ADDRESS={given}: no Ray cluster answers at {host}:{port}; start it (`ray start --head`) "
                          "or unset RAY_ADDRESS to run on a local instance")
    if warn:
        log.warning("no Ray cluster answers at %s:%s, the address a `ray start` left in %s (stopped without `ray "
                    "stop`?); starting a local Ray instance instead", host, port, ray_private.address_file())
    return "local"


def dashboard() -> str:
    if not ray.is_initialized():
        return "(Ray not started: nothing to compute)"
    # ray.init on a connected process returns its context, whoever started it (the caller, `ray submit`, us).
    url = ray.init(ignore_reinit_error=True, logging_level=logging.WARNING).dashboard_url
    return (url if "://" in url else f"http://{url}") if url else "(dashboard not running)"  # a link to open


def layout(cfg: SweepConfig, n_models: int, cap: dict[str, float] | None = None) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor), from the config, the population and the largest size the
    cluster can reach (`cap`; default: reachable()) — its autoscaler's limits, not what happens to run when the
    job starts: actors that do not fit yet wait, and their requests are what make the autoscaler add nodes.

    One process per GPU (CUDA contexts and time-slicing make more cost), or one per `cpus_per_actor` cores;
    each process holds several resident models when N exceeds the processes. More actors than GPUs share them
    k to a GPU, each asking for 1/k (a share that is not 1/k leaves part of every GPU unusable: 12 actors of
    8/12 on 8 GPUs fit one a GPU, and 4 wait forever). Actors that cannot all fit the GPUs the cluster can ever
    have are refused in one line; with more actors than cores, they share the cores rather than wait.
    """
    cap = reachable() if cap is None else cap
    share = cfg.gpus_per_actor
    if share == "auto":
        share = 1.0 if cfg.device == "cuda" or (cfg.device == "auto" and cap["GPU"] > 0) else 0.0
    per_gpu, gpus = (round(1 / share) if share else 0), int(cap["GPU"])
    if cfg.actors != "auto":
        n = cfg.actors
    elif share:
        n = max(1, gpus * per_gpu)
    else:
        n = max(1, int(cap["CPU"] // cfg.cpus_per_actor))
    n = min(n, n_models)
    if share and gpus:
        if cfg.gpus_per_actor == "auto":
            per_gpu = -(-n // gpus)
        elif n > gpus * per_gpu:
            raise ConfigError(f"config: actors {n} with gpus_per_actor {cfg.gpus_per_actor:g} need {-(-n // per_gpu)} "
                              f"GPUs and the cluster has at most {gpus} (set gpus_per_actor auto or 1/{-(-n // gpus)}, "
                              f"or actors {gpus * per_gpu})")
    return n, gpu_share(per_gpu) if share else 0.0, min(float(cfg.cpus_per_actor), max(1.0, cap["CPU"]) / n)


def gpu_share(per_gpu: int) -> float:
    """1/k of a GPU, rounded down to Ray's resource unit (1e-4), so that k of them fit on one GPU."""
    return math.floor(1e4 / per_gpu) / 1e4


def on_gpus(cfg: SweepConfig) -> bool:
    """Whether the sweep's actors will compute on GPUs: device cuda, or auto and the layout asks the cluster this
    job joins for GPUs. device: cpu computes on CPUs whatever the actors reserve. The layout is checked here,
    before the store opens, whenever the config fixes both actors and GPU shares.

    A local instance is not started to be asked (that takes half a minute): it would have this machine's CPUs
    and GPUs, so the store is checked (lease, complete) before Ray starts."""
    fixed = cfg.actors != "auto" and cfg.gpus_per_actor not in ("auto", 0)
    if cfg.device != "auto" and not fixed:
        return cfg.device == "cuda"
    if ray.is_initialized() or _address(warn=False) != "local":
        init()
        cap = None
    else:
        cap = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    gpus = layout(cfg, len(cfg.models), cap)[1] > 0
    return cfg.device == "cuda" if cfg.device != "auto" else gpus


def reachable() -> dict[str, float]:
    """The CPUs and GPUs the cluster has now or its autoscaler may start (a GPU cluster may start with none)."""
    now, most = ray.cluster_resources(), _most()
    return {k: max(float(now.get(k, 0)), float(most.get(k) or 0)) for k in ("CPU", "GPU")}


def _most() -> dict[str, float]:
    """The most CPUs and GPUs the cluster can reach: from the limits its autoscaler publishes (autoscaler v2), or
    on a head that `ray up` started, from the autoscaler's config it left there (~/ray_bootstrap_config.yaml,
    node types with their resources filled in). Empty when neither says: a cluster without an autoscaler."""
    most = ray_private.max_resources()
    if most:
        return most
    path = Path("~/ray_bootstrap_config.yaml").expanduser()
    if not path.is_file():
        return {}
    cfg = yaml.safe_load(path.read_text())
    total: dict[str, float] = {}
    for name, node in (cfg.get("available_node_types") or {}).items():
        count = 1 if name == cfg.get("head_node_type") else min(node.get("max_workers", 0), cfg.get("max_workers", 0))
        for key in ("CPU", "GPU"):
            total[key] = total.get(key, 0) + count * float((node.get("resources") or {}).get(key, 0))
    return total


def labels(names: list[str]) -> list[str]:
    """What the dashboard calls each model in actor and task names, and so Ray's own metrics too (a process's title,
    its task's name, is a label there): its name's last path component, numbered where two share one — never a
    path (a user's folders, a bucket's layout are not for whoever reads a node's metrics port)."""
    short = [n.rstrip("/").rsplit("/", 1)[-1] or n for n in names]
    shared = {s for s, c in Counter(short).items() if c > 1}
    return [f"{s}#{i}" if s in shared else s for i, s in enumerate(short)]


def _name(labels: list[str], indices: list[int]) -> str:
    names = [labels[i] for i in indices]
    return f"model:{names[0]}" if len(names) == 1 else f"models:{names[0]}..{names[-1]} ({len(names)})"


class _LostInput(Exception):
    """A task's input (a partner's published weights) was lost with the actor that produced it."""


class _Pool:
    """Work submitted to the actors, resubmitted when an actor's death takes it down.

    Ray restarts a dead actor (reloading its models); the driver, not Ray, retries the lost tasks, so
    it can count deaths per actor and stop with a clear error naming the models when one keeps dying.
    Deaths are counted as new incarnations (process ids) of the actor, so the several tasks that one
    death takes down count once.
    """

    def __init__(self, actors, datas: list, names: list[str], max_retries: int, need: str, timeout: float):
        # `datas`: the eval data's refs, which every call carries; held here for the whole sweep, since an actor
        # still waiting for its node, or restarted, reads them then, and Ray frees an object nobody refers to.
        self.actors, self.datas, self.names, self.max_retries = actors, datas, names, max_retries
        self.pids, self.deaths = [None] * len(actors), [0] * len(actors)
        self.tasks = {}  # ref -> (actor index, what, make, attempt)
        self._start(need, timeout)

    def _start(self, need: str, timeout: float) -> None:
        """Wait until every actor runs and note its process id. Actors wait for resources the cluster may not
        have yet (an autoscaler starting GPU nodes): say so every 30 s; after `timeout`, stop in one line naming
        what is missing. An actor that dies while starting counts a death, as it would later."""
        refs, start = {a.pid.remote(self.datas): k for k, a in enumerate(self.actors)}, time.monotonic()
        while True:
            waited = time.monotonic() - start
            ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=max(0.1, min(30.0, timeout - waited)))
            for ref in ready:
                k = refs.pop(ref)
                try:
                    self.pids[k] = _get(ref)  # where bad input found in an actor (NaN weights) surfaces
                except ray.exceptions.RayActorError as e:
                    self._recover(k, e)
            if not waiting:
                return
            waited, have = time.monotonic() - start, ray.cluster_resources()
            have = f"{have.get('GPU', 0):g} GPU, {have.get('CPU', 0):g} CPU"
            if waited >= timeout:
                raise SweepError(f"{len(waiting)} of {len(self.actors)} actors never started in {waited:.0f} s: each "
                                 f"needs {need} and the cluster has {have} (no node offers that, or none came up; see "
                                 "`ray status`; resource_timeout sets the wait). Nothing stored was lost")
            log.info("waiting for %d of %d actors (each needs %s) for %.0f s; the cluster has %s now — see `ray status`",
                     len(waiting), len(self.actors), need, waited, have)

    def submit(self, k: int, what: str, make, attempt: int = 0) -> None:
        """make(actor, attempt) -> ObjectRef; called again, with attempt + 1, for a retry."""
        self.tasks[make(self.actors[k], attempt)] = (k, what, make, attempt)

    def __len__(self) -> int:
        return len(self.tasks)

    def next(self):
        """(actor index, result) of the next task to finish; lost tasks are resubmitted in between."""
        while True:
            ready, _ = ray.wait(list(self.tasks), num_returns=1)
            k, what, make, attempt = self.tasks.pop(ready[0])
            try:
                return k, _get(ready[0])
            except ray.exceptions.RayActorError as e:
                self._recover(k, e)
            except _LostInput as e:
                if attempt >= self.max_retries:
                    raise SweepError(f"{what} lost its input {attempt + 1} times: {e}") from None
                log.warning("%s lost its input (%s); publishing it again and retrying", what, e)
            self.submit(k, what, make, attempt + 1)

    def _recover(self, k: int, error: Exception) -> None:
        """Wait until actor k is back from its restart; count the death; give up after max_retries."""
        while True:
            try:
                pid = _get(self.actors[k].pid.remote(self.datas))
                break
            except ray.exceptions.ActorUnavailableError:
                time.sleep(0.2)  # restarting: its models are being reloaded
            except ray.exceptions.RayActorError as e:  # dead for good: all its restarts are used up
                pid, error = None, e
                self.deaths[k] = self.max_retries + 1  # every restart used up, the incarnations unseen too
                break
        if pid is not None and pid != self.pids[k]:
            self.pids[k] = pid
            self.deaths[k] += 1
            log.warning("actor %s died (%d of %d restarts); retrying its unfinished tasks",
                        self.names[k], self.deaths[k], self.max_retries)
        if pid is None or self.deaths[k] > self.max_retries:
            raise SweepError(f"actor {self.names[k]} died {self.deaths[k]} times (max_retries {self.max_retries}); "
                             f"giving up on its models. Last error: {first_line(error)}")


class _Partners:
    """Weights of models an actor does not hold, shipped through the object store: each published once (by the
    actor holding it), published afresh if a task lost it, and dropped once no queued pair needs it, so the
    object store holds a few models' weights at a time, not all N."""

    def __init__(self, actors, datas: list, actor_of: dict[int, int], queues: list[deque]):
        self.actors, self.datas, self.actor_of = actors, datas, actor_of
        self.uses = Counter(self.of(k, p) for k, q in enumerate(queues) for p in q)
        self.published = {}

    def of(self, k: int, pair: Pair) -> int | None:
        """The model of `pair` that actor k lacks (None when it holds both)."""
        return next((m for m in (pair.b, pair.a) if self.actor_of[m] != k), None)

    def ref(self, m: int | None, fresh: bool = False) -> list:
        """[ref to m's weights], or [] for None; `fresh` republishes them (a retry: they may be what was lost)."""
        if m is None:
            return []
        if fresh or m not in self.published:
            self.published[m] = self.actors[self.actor_of[m]].weights.remote(m, self.datas)
        return [self.published[m]]

    def done(self, k: int, pair: Pair) -> None:
        m = self.of(k, pair)
        self.uses[m] -= 1
        if m is not None and not self.uses[m]:
            self.published.pop(m, None)


def run(plan: Plan, progress: bool = True) -> RunReport:
    """Compute what the store lacks; the report's `busy` is the seconds each actor spent computing, so a caller can
    see whether the work was spread evenly (benchmarks/scaling.py prints it)."""
    with Recorder(plan) as rec:
        if rec.complete:
            log.info("store %s is complete: %d pairs, nothing to compute", plan.cfg.store, len(plan.pairs))
            return RunReport()
        report = RunReport(len(rec.endpoints), len(rec.pairs), len(rec.planes))
        report.busy = _run(plan, rec, progress)
        return report


def _start(plan: Plan, to_compute: int) -> tuple[_Pool, list[list[int]]]:
    """The actors, each holding its block of models, behind a retry pool that waits until they run; and which
    models each holds."""
    cfg, n = plan.cfg, len(plan.names)
    dashboard = init()
    n_actors, gpu_share, cpu_share = layout(cfg, n)
    residents = schedule.assign_models(n, n_actors)
    data_refs = [ray.put(d) for d in plan.datas]
    shown = labels(plan.names)
    names = [_name(shown, ms) for ms in residents]
    actors = [
        ModelActor.options(name=name, num_cpus=cpu_share, num_gpus=gpu_share, max_restarts=cfg.max_retries)
        .remote(cfg, ms, plan.labels, plan.revisions, plan.base_revision, max(1, int(cpu_share)), k)
        for k, (name, ms) in enumerate(zip(names, residents))
    ]
    log.info("Ray dashboard: %s", dashboard)
    log.info("%d actors for %d models (%.2f GPU, %.2f CPU each); %d of %d pairs to compute", n_actors, n,
             gpu_share, cpu_share, to_compute, len(plan.pairs))
    need = f"{gpu_share:.2f} GPU, {cpu_share:.2f} CPU"
    try:
        return _Pool(actors, data_refs, names, cfg.max_retries, need, cfg.resource_timeout), residents
    except BaseException:
        _end(actors)
        raise


def _end(actors) -> None:
    """Kill the sweep's actors, so that no failed, interrupted or finished run keeps their GPUs and names (a rerun
    in the same process, a notebook's, starts actors of the same names)."""
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def _run(plan: Plan, rec: Recorder, progress: bool) -> list[float]:
    pool, residents = _start(plan, len(rec.pairs))
    try:
        return _compute(plan, rec, progress, pool, residents)
    finally:
        _end(pool.actors)


def _compute(plan: Plan, rec: Recorder, progress: bool, pool: _Pool, residents: list[list[int]]) -> list[float]:
    cfg, n = plan.cfg, len(plan.names)
    shown = labels(plan.names)
    actors, datas = pool.actors, pool.datas
    actor_of = {m: k for k, ms in enumerate(residents) for m in ms}

    # Endpoints: each model alone, once per model (and never again on a resumed run).
    for e in rec.endpoints:
        what = f"endpoint:{shown[e.model]}"
        pool.submit(actor_of[e.model], what, lambda actor, _, e=e, what=what: actor.endpoint.options(name=what).remote(e, datas))
    for _, result in track((pool.next() for _ in rec.endpoints), len(rec.endpoints), "endpoints", "model",
                           not progress):
        rec.endpoint(result)

    # Pairs: each actor works through its own queue, a few tasks in flight.
    queues = [deque(q) for q in schedule.queues(n, residents, set(rec.pairs))]
    partners = _Partners(actors, datas, actor_of, queues)

    def submit(k: int) -> None:
        pair = queues[k].popleft()
        what = f"pair:{shown[pair.a]}|{shown[pair.b]}"
        make = (lambda actor, attempt: actor.pair.options(name=what)
                .remote(pair, rec.end_losses(pair), partners.ref(partners.of(k, pair), fresh=attempt > 0), datas))
        pool.submit(k, what, make)

    for k in range(len(actors)):
        for _ in range(cfg.max_in_flight):
            if queues[k]:
                submit(k)
    bar = progress_bar(len(rec.pairs), "pairs", "pair", not progress)
    metrics = _Metrics(cfg.store, len(rec.pairs))
    per_alpha = sum(len(plan.datas[k]) for k in plan.on_line)
    while len(pool):
        k, result = pool.next()
        rec.pair(result)
        partners.done(k, result.pair)
        bar.update(1)
        metrics.pair(per_alpha * len(result.line.interior))
        if queues[k]:
            submit(k)
    bar.close()

    # Planes: each on the actor holding its origin, its other two models published for it if held elsewhere.
    for q in rec.planes:
        k, what = actor_of[q.a], f"plane:{'|'.join(shown[m] for m in q)}"
        make = (lambda actor, _, q=q, k=k, what=what: actor.plane.options(name=what).remote(
            q, [actors[actor_of[m]].weights.remote(m, datas) if actor_of[m] != k else None for m in (q.b, q.c)],
            datas))
        pool.submit(k, what, make)
    for _, result in track((pool.next() for _ in rec.planes), len(rec.planes), "planes", "plane", not progress):
        rec.plane(result)
    busy = [_busy(a) for a in actors]
    if len(actors) > 1:
        log.info("%s", balance(busy))
    return busy


def _busy(actor) -> float:
    """Seconds the actor computed; one restarted mid-sweep counts from its restart, one that died after its last
    task (its results are stored) as 0."""
    try:
        return ray.get(actor.busy_time.remote())
    except ray.exceptions.RayActorError:
        return 0.0


def balance(busy: list[float]) -> str:
    """Whether the work was spread evenly over the actors, in words."""
    mean = max(1e-9, sum(busy) / len(busy))
    return (f"{len(busy)} actors busy {min(busy):.1f} to {max(busy):.1f} s "
            f"(spread {100 * (max(busy) - min(busy)) / mean:.0f}% of the mean)")


def _get(ref):
    """ray.get, with bad input found inside an actor (e.g. NaN weights) reported as the one line it is, and a
    task whose input died with another actor told apart from the task's own failure (by the cause's class)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e
        while isinstance(cause, ray.exceptions.RayTaskError):
            cause = cause.cause
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        if isinstance(cause, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
            raise _LostInput(first_line(cause)) from None
        raise
