"""Reduced precision along the paper's lines: how far bf16 and fp16 land from fp32, on real finetuned models.

    make demo   # once: finetunes the built-in population into results/demo/models
    .venv/bin/python benchmarks/dtype_error.py [--models results/demo/models] [--examples 512]

The demo's 12 models, every pair on the paper's 10-point grid, on 512 validation and 512 diagnostic
examples, swept by the compute core in one process once per dtype (the working copy in that dtype, the mix
in fp32 and rounded once, logits and losses accumulated in fp32). Against the fp32 sweep: the largest and
mean |Δ| of the loss barrier (paper's definition), of the loss and of the accuracy at every α, and whether
the paper's clustering gives the same basins. On a CPU this measures the formats' rounding; a GPU's bf16
matmuls accumulate in fp32 too, so the same order of error is expected there (benchmarks/gpu.py times it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
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
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--dtypes", default="bfloat16,float16")
    args = p.parse_args()
    models = demo_population.models(args, "dtype_error")
    diagnostic = str(Path(args.data).with_name("diagnostic.jsonl"))
    torch.set_num_threads(os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="lmc-dtype-"))

    def sweep(dtype: str):
        store = work / dtype
        cfg = config.from_dict({"models": [str(m) for m in models], "store": str(store), "alphas": 10,
                                "dtype": dtype, "cache_dir": str(work / "cache"), "eval_sets": [
                                    {"name": "validation", "path": args.data, "text": ["premise", "hypothesis"],
                                     "label": "label", "max_examples": args.examples},
                                    {"name": "diagnostic", "path": diagnostic, "text": ["premise", "hypothesis"],
                                     "label": "label", "max_examples": args.examples, "balance_by": "subcase",
                                     "role": "diagnostic"}]})
        t = time.perf_counter()
        local.run(plan.prepare(cfg), progress=False)
        wall = time.perf_counter() - t
        a = findings.run(Store(str(store)), "validation")
        curves = a.curves.query("subset == 'all'").set_index(["model_a", "model_b", "eval_set", "alpha"])
        return wall, a, curves.sort_index()

    try:
        wall32, ref, ref_curves = sweep("float32")
        ref_bar = ref.barriers.query("metric == 'loss'").set_index(["model_a", "model_b", "eval_set"]).barrier
        print(machine())
        print(f"{len(models)} models, "
              f"{ref.curves.groupby(['model_a', 'model_b']).ngroups} pairs x 10 α, {args.examples} validation + "
              f"{args.examples} diagnostic examples; fp32 sweep {wall32:.1f} s, loss barriers "
              f"{ref_bar.min():.4f} .. {ref_bar.max():.4f}")
        print(f"{'dtype':>9} | wall s | max |Δ barrier| | mean |Δ barrier| | max |Δ loss| | max |Δ accuracy| | "
              f"same basins (ARI)")
        for dtype in args.dtypes.split(","):
            wall, a, curves = sweep(dtype)
            bar = a.barriers.query("metric == 'loss'").set_index(["model_a", "model_b", "eval_set"]).barrier
            d_bar = (bar - ref_bar).abs()
            d = (curves[["loss", "accuracy"]] - ref_curves[["loss", "accuracy"]]).abs()
            ari = adjusted_rand_score(ref.labels("paper"), a.labels("paper"))
            print(f"{dtype:>9} | {wall:6.1f} | {d_bar.max():16.2e} | {d_bar.mean():16.2e} | {d.loss.max():12.2e} | "
                  f"{d.accuracy.max():16.4f} | {ari:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    np.set_printoptions(precision=4)
    main()
