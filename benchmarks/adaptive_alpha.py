"""Adaptive α against the paper's fixed grid: evaluations spent and barrier error, on a real population.

    make demo   # once: writes the built-in task's data into results/demo/data
    .venv/bin/python benchmarks/adaptive_alpha.py [--models lmc_ray/demo_population] [--dense 33]

Every schedule is run by the compute core in one process on the same models and data (the demo's 512
validation examples). The reference is a dense grid (--dense points); each schedule's barriers (the
paper's definition, on loss) are compared with it pair by pair.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import demo_population
from lmc_ray.analysis import barriers
from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.testing.machine import machine

SCHEDULES = {"paper grid 10": (10, 0), "grid 5 + refine 1": (5, 1), "grid 5 + refine 2": (5, 2),
             "grid 4 + refine 2": (4, 2), "grid 3 + refine 3": (3, 3)}


def pair_barriers(store: Path) -> pd.Series:
    """The paper's loss barrier per pair, as `analyse` computes it."""
    return barriers.table(pd.read_parquet(store / "curves")).query("metric == 'loss'").set_index(
        ["model_a", "model_b"]).barrier


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo_population.arguments(p)
    p.add_argument("--dense", type=int, default=33)
    args = p.parse_args()
    models = demo_population.models(args, "adaptive_alpha")
    torch.set_num_threads(os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="lmc-adaptive-"))
    n_pairs = len(models) * (len(models) - 1) // 2
    print(machine())
    print(f"{len(models)} models from {args.models}, {n_pairs} pairs, 512 examples of {Path(args.data).name}")

    def run(name, alphas, refine):
        store = work / name.replace(" ", "_").replace("+", "")
        cfg = config.from_dict({"models": [str(m) for m in models], "store": str(store), "alphas": alphas,
                                "refine": refine, "cache_dir": str(work / "cache"),
                                "eval_sets": [{"name": "validation", "path": args.data, "text": ["premise", "hypothesis"],
                                               "label": "label", "max_examples": 512}]})
        t = time.perf_counter()
        local.run(plan.prepare(cfg), progress=False)
        return time.perf_counter() - t, pair_barriers(store), (alphas - 2) + 2 * refine

    _, dense, _ = run(f"dense {args.dense}", args.dense, 0)
    print(f"reference: dense grid of {args.dense} points; barriers {dense.min():.4f} .. {dense.max():.4f} "
          f"(median {dense.median():.4f})")
    print(f"{'schedule':>18} | interior evals/pair | wall s | mean |Δ barrier| | max |Δ| | mean Δ / mean barrier")
    for name, (alphas, refine) in SCHEDULES.items():
        wall, got, evals = run(name, alphas, refine)
        err = (got - dense).abs()
        print(f"{name:>18} | {evals:18d} | {wall:6.1f} | {err.mean():17.5f} | {err.max():.5f} | "
              f"{err.mean() / dense.mean():.1%}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
