"""The Ray layer: actors hold resident models, the driver fans out pairs and writes the store.

Thin on purpose: what is computed lives in Residents/Core (no Ray); this module only decides where it
runs, keeps a bounded amount of work in flight, and streams each finished pair into the store.
"""
from __future__ import annotations

import logging
import re
from collections import deque

import ray
from tqdm.auto import tqdm

from . import schedule
from .config import ConfigError, SweepConfig
from .plan import Plan
from .residents import Residents

log = logging.getLogger("lmc_ray")


@ray.remote
class ModelActor:
    def __init__(self, cfg: SweepConfig, indices: list[int], labels: list[str], datas, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.res = Residents(cfg, indices, labels, ray.get(datas))  # refs in a list arrive unresolved
        self.alphas = cfg.alphas

    def endpoint(self, i: int):
        return i, self.res.endpoint(i)

    def weights(self, i: int):
        return self.res.export(i)

    def pair(self, a: int, b: int, partner: list):
        # The partner's ref arrives wrapped in a list so Ray does not fetch it unless it is needed.
        return a, b, self.res.curve(a, b, self.alphas, fetch=lambda: ray.get(partner[0]))


def init() -> str:
    """Join the cluster this job runs in (RAY_ADDRESS, `ray submit`, `ray job submit`) or start one.

    Returns the dashboard address, so users know where to watch.
    """
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)
    return dashboard()


def dashboard() -> str:
    if not ray.is_initialized():
        return "(Ray not started: nothing to compute)"
    return ray._private.worker.get_dashboard_url() or "(dashboard not running)"  # no public getter in 2.x


def layout(cfg: SweepConfig, n_models: int) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for this cluster.

    One process per GPU (CUDA contexts and time-slicing make more cost), or one per `cpus_per_actor`
    cores; each process holds several resident models when N exceeds the processes available. When
    more actors are asked for than the cluster has cores, they share them (fractional CPUs) rather
    than wait forever for resources that will never come.
    """
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if cfg.device != "cpu" else 0
    cpus = max(1, int(res.get("CPU", 1)))
    if cfg.actors == "auto":
        n = gpus if gpus else max(1, cpus // cfg.cpus_per_actor)
    else:
        n = cfg.actors
    n = min(n, n_models)
    gpu_share = min(1.0, gpus / n) if gpus else 0.0
    cpu_share = min(float(cfg.cpus_per_actor), cpus / n)
    return n, gpu_share, cpu_share


def _name(plan: Plan, indices: list[int]) -> str:
    names = [plan.names[i] for i in indices]
    return f"model:{names[0]}" if len(names) == 1 else f"models:{names[0]}..{names[-1]} ({len(names)})"


def run(plan: Plan, progress: bool = True) -> None:
    cfg, n = plan.cfg, len(plan.names)
    if not plan.pending and not plan.missing_endpoints():
        log.info("store %s is complete: %d pairs, nothing to compute", cfg.store, n * (n - 1) // 2)
        return
    dashboard = init()
    n_actors, gpu_share, cpu_share = layout(cfg, n)
    threads = max(1, int(cpu_share))
    residents = schedule.assign_models(n, n_actors)
    actor_of = {m: k for k, ms in enumerate(residents) for m in ms}
    data_refs = [ray.put(d) for d in plan.datas]
    actors = [
        ModelActor.options(name=_name(plan, ms), num_cpus=cpu_share, num_gpus=gpu_share,
                           max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries)
        .remote(cfg, ms, plan.labels, data_refs, threads)
        for ms in residents
    ]
    log.info("Ray dashboard: %s", dashboard)
    log.info("%d actors for %d models (%.2f GPU, %.2f CPU each); %d of %d pairs to compute", n_actors, n,
             gpu_share, cpu_share, len(plan.pending), n * (n - 1) // 2)

    # Endpoints: each model alone, once per model (and never again on a resumed run).
    missing = plan.missing_endpoints()
    todo = [actors[actor_of[i]].endpoint.options(name=f"endpoint:{plan.names[i]}").remote(i) for i in missing]
    ends = plan.gather_endpoints(_get(ref) for ref in _as_completed(todo, "endpoints", progress))

    # Pairs: each actor works through its own queue; weights of a model it lacks are published once.
    queues = [deque(q) for q in schedule.plan(n, residents, set(plan.pending))]
    published = {}

    def submit(k: int):
        a, b = queues[k].popleft()
        partner = next((m for m in (b, a) if actor_of[m] != k), None)
        if partner is not None and partner not in published:
            published[partner] = actors[actor_of[partner]].weights.remote(partner)
        wrapped = [published[partner]] if partner is not None else []
        return actors[k].pair.options(name=f"pair:{plan.names[a]}|{plan.names[b]}").remote(a, b, wrapped)

    inflight = {}
    for k in range(len(actors)):
        for _ in range(cfg.max_in_flight):
            if queues[k]:
                inflight[submit(k)] = k
    bar = tqdm(total=len(plan.pending), desc="pairs", unit="pair", disable=not progress)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        k = inflight.pop(ready[0])
        a, b, interior = _get(ready[0])
        plan.record_pair(a, b, interior, ends)
        bar.update(1)
        if queues[k]:
            inflight[submit(k)] = k
    bar.close()
    for actor in actors:
        ray.kill(actor)


def _get(ref):
    """ray.get, with bad input found inside an actor (e.g. NaN weights) reported as the one line it is."""
    try:
        return ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
        found = re.findall(r"ConfigError: (.+)", str(e))
        if found:
            raise ConfigError(found[-1].strip()) from None
        raise


def _as_completed(refs, desc: str, progress: bool):
    bar = tqdm(total=len(refs), desc=desc, disable=not progress or not refs)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        bar.update(1)
        yield ready[0]
    bar.close()

