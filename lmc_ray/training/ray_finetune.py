"""Finetuning on Ray Tune: one trial per seed, metrics reported as they train, resumable with Tuner.restore."""
from __future__ import annotations

import logging
import os
from dataclasses import replace

from . import finetune
from ..errors import SweepError
from .finetune import FinetuneConfig

log = logging.getLogger("lmc_ray")


def run(cfg: FinetuneConfig, experiment_dir: str, name: str = "finetune", cpus_per_trial: float = 1.0,
        gpus_per_trial: float | str = "auto") -> list[str]:
    """Train every seed whose model is not in cfg.output yet; return the model references in seed order.

    gpus_per_trial: what each trial asks Ray for (a fraction shares a GPU between trials); auto = 1 when the
    cluster has GPUs or its autoscaler may start some, and the config's device is not cpu, else 0."""

    from ray import tune

    from ..execution.ray_sweep import init, reachable

    finetune.check(cfg)
    written = cfg.base
    cfg = _absolute(cfg)
    urls = [finetune.model_url(cfg, s) for s in cfg.seeds]
    todo = [s for s in cfg.seeds if not finetune.exists(cfg, s)]
    if not todo:
        log.info("finetune: all %d models already in %s", len(urls), cfg.output)
        return urls
    init()
    if gpus_per_trial == "auto":
        gpus_per_trial = 1.0 if cfg.device != "cpu" and reachable()["GPU"] > 0 else 0.0
    log.info("finetune: %d trial(s) to train, each with %g CPU and %g GPU", len(todo), cpus_per_trial, gpus_per_trial)

    def trial(config):
        # A run killed after a model was saved but before Tune recorded its trial as done restores that
        # trial; the saved model stands.
        if not finetune.exists(cfg, config["seed"]):
            finetune.train(cfg, config["seed"], report=tune.report, threads=max(1, int(cpus_per_trial)),
                           base_name=written)

    trainable = tune.with_resources(trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    path = os.path.join(os.path.abspath(os.path.expanduser(experiment_dir)), name)
    if tune.Tuner.can_restore(path):
        log.info("finetune: resuming the Tune experiment in %s", path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": tune.grid_search(todo)},
            # One process trains seed after seed: a fresh one per trial re-imports torch and transformers, seconds
            # per seed. A trial's state is its own (train() seeds torch and builds its model and data anew).
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=os.path.dirname(path), verbose=1),
        )
    results = tuner.fit()
    failed = [r for r in results if r.error]
    if failed:
        raise SweepError(f"finetune: {len(failed)} trial(s) failed, first: {str(failed[0].error).splitlines()[0]}")
    missing = [s for s in cfg.seeds if not finetune.exists(cfg, s)]
    if missing:
        raise SweepError(f"finetune: no saved model for seed(s) {missing} in {cfg.output}")
    return urls


def _absolute(cfg: FinetuneConfig) -> FinetuneConfig:
    """Local paths made absolute: Tune runs each trial in its own working directory."""
    def fix(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path)) if os.path.exists(os.path.expanduser(path)) else path

    sets = [replace(e, path=fix(e.path)) for e in cfg.eval_sets]
    output = cfg.output if "://" in cfg.output else os.path.abspath(os.path.expanduser(cfg.output))
    return replace(cfg, base=fix(cfg.base), train=replace(cfg.train, path=fix(cfg.train.path)), eval_sets=sets,
                   output=output)
