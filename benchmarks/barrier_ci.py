"""Subsampling the eval set, with a bootstrap interval on each barrier: time saved against precision lost.

    make demo   # once: writes the built-in task's data into results/demo/data
    .venv/bin/python benchmarks/barrier_ci.py [--models lmc_ray/demo_population] [--bootstrap 1000]

The demo's 16 shipped models on the first K of its 1,000 validation examples, for several K, each swept by the
compute core in one process with per-example values kept (per_example: true), then analysed as the cluster
job does (paired bootstrap, 95 % intervals). The reference is the same sweep on all 1,000 examples. For
each K: the sweep's wall time, how far the barriers land from the reference, how often the reference
falls inside the interval, the intervals' width, and whether the basins are the same.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

import demo_population
from lmc_ray.analysis import findings
from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.storage.store import Store
from lmc_ray.testing.machine import machine



def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo_population.arguments(p)
    p.add_argument("--sizes", default="64,128,256,512")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()
    models = demo_population.models(args, "barrier_ci")
    torch.set_num_threads(os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="lmc-ci-"))
    n_all = sum(1 for _ in open(args.data))

    def run(k: int):
        store = work / f"k{k}"
        cfg = config.from_dict({"models": [str(m) for m in models], "store": str(store), "alphas": 10,
                                "per_example": True, "cache_dir": str(work / "cache"),
                                "eval_sets": [{"name": "validation", "path": args.data,
                                               "text": ["premise", "hypothesis"], "label": "label",
                                               "max_examples": k}]})
        t = time.perf_counter()
        local.run(plan.prepare(cfg), progress=False)
        wall = time.perf_counter() - t
        t = time.perf_counter()
        a = findings.run(Store(str(store)), "validation", bootstrap=args.bootstrap)
        return wall, time.perf_counter() - t, a

    wall_ref, _, ref = run(n_all)
    ref_bar = ref.barriers.query("metric == 'loss'").set_index(["model_a", "model_b"])
    print(machine())
    print(f"{len(models)} models, "
          f"{len(ref_bar)} pairs, paper's 10 α; reference: all {n_all} examples of {Path(args.data).name} "
          f"({wall_ref:.1f} s), loss barriers {ref_bar.barrier.min():.4f} .. {ref_bar.barrier.max():.4f}, "
          f"basins (paper's recipe) of {np.bincount(ref.labels('paper')).tolist()} models")
    print(f"{'examples':>8} | sweep s | speed-up | bootstrap s | mean |Δ barrier| | reference inside "
          f"{args.bootstrap}-resample 95% interval | median width | ARI of basins vs reference")
    for k in [int(s) for s in args.sizes.split(",")]:
        wall, boot, a = run(k)
        bar = a.barriers.query("metric == 'loss'").set_index(["model_a", "model_b"]).loc[ref_bar.index]
        inside = ((bar.barrier_lo <= ref_bar.barrier) & (ref_bar.barrier <= bar.barrier_hi)).mean()
        ari = adjusted_rand_score(ref.labels("paper"), a.labels("paper"))
        print(f"{k:>8} | {wall:7.1f} | {wall_ref / wall:7.1f}x | {boot:11.1f} | {(bar.barrier - ref_bar.barrier).abs().mean():17.4f} | "
              f"{inside:41.0%} | {(bar.barrier_hi - bar.barrier_lo).median():12.4f} | {ari:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
