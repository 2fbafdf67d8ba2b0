"""lmc-ray: the loss landscape between finetuned models, at cluster scale.

    import lmc_ray
    store = lmc_ray.sweep("my.yaml")                 # or a dict, a SweepConfig, a shipped name ("mnli")
    result = lmc_ray.analyse(store)                  # barriers, basins, per-cluster scores as DataFrames
    result.barriers, result.clusters, result.per_cluster

Runs on the Ray cluster the caller initialised, joins or starts one otherwise, or in this process
(`executor="local"`). The command line is `lmc-ray` (lmc_ray/cli.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .analysis.findings import Analysis
    from .config import SweepConfig
    from .storage.store import Store

__all__ = ["sweep", "analyse"]


def sweep(config: str | dict | SweepConfig, executor: str = "ray", progress: bool = True) -> Store:
    """Every pair's line into the store the config names; resumes what a previous run left. Returns the store.

    In a dict config a model may be an object, {"name": ..., "model": a transformers model[, "tokenizer": ...]},
    and an eval set may carry {"dataset": a datasets.Dataset} instead of a path: both are written once into the
    cache (lmc_ray/compute/inmemory.py)."""
    from . import config as C
    from .compute import inmemory
    from .execution import executor as X, plan
    from .storage.store import Store

    run = X.named(executor)
    if isinstance(config, str):
        config = C.load(C.parser("").parse_args(["--config", config]))
    elif isinstance(config, dict):
        config = C.from_dict(inmemory.materialize(config))
    else:
        C.validate(config)
    p = plan.prepare(config, run.on_gpus)
    run.run(p, progress=progress)
    return Store(p.cfg.store, p.cfg.storage_options)


def analyse(store: str | Store, out: str | None = None, **options) -> Analysis:
    """Barriers, clusters and per-cluster generalization of a finished store (options as analysis.findings.run takes them:
    eval_set, metric, bootstrap, level, scores_file); also writes barriers.parquet and the other tables beside the
    curves, or into folder `out`."""
    from .analysis import findings
    from .storage.store import Store

    store = Store(store) if isinstance(store, str) else store
    target = Store(out) if out else store
    try:
        try:
            result = findings.run(store, **options)
        except findings.BarriersOnly as e:  # chosen pairs: their barriers are all there is to write
            findings.write(target, e)
            raise
        findings.write(target, result)
    finally:
        target.close()  # no empty _tmp/ left
    return result
