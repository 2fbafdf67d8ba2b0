"""Reduced precision along the paper's lines: how far bf16, fp16 and TF32 land from fp32, on real finetuned models.

    make demo   # once: writes the built-in task's data into results/demo/data
    .venv/bin/python benchmarks/dtype_error.py [--models lmc_ray/demo_population] [--max-examples 512]
    .venv/bin/python benchmarks/dtype_error.py --config cola --overlay offline/cola --overlay offline/cola_minilm \
        --set 'models=[...]'   # any sweep config: its models and eval sets (a pretrained start: docs/performance.md)

By default the demo's 16 shipped models, every pair on the paper's 10-point grid, on 512 validation and 512 diagnostic
examples; with --config, that sweep's models and eval sets (overlays, --set and flags as `lmc-ray sweep` takes
them). Swept by the compute core in one process once per dtype (the working copy in that dtype, the mix in fp32
and rounded once, logits and losses accumulated in fp32). Against the fp32 sweep: the largest and mean |Δ| of
the loss barrier (paper's definition, on the first in-domain set), of the loss and of the accuracy at every α
(every set on the lines), and whether the paper's clustering gives the same basins. On a CPU this measures the
formats' rounding; a GPU's bf16 matmuls accumulate in fp32 too, so the same order of error is expected there
(benchmarks/gpu.py times it). TF32 is a GPU matmul mode: on a CPU it is emulated (lmc_ray/testing/tf32.py), rounding
and truncating, and its wall time says nothing of a GPU's.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import replace
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
from lmc_ray.testing import tf32
from lmc_ray.testing.machine import machine


def main():
    p = config.parser(__doc__.splitlines()[0])
    demo_population.arguments(p)
    p.add_argument("--dtypes", default="bfloat16,float16,tfloat32")
    args = p.parse_args()
    base = config.load(args, None if args.config else _demo(args))
    on_line = next(e.name for e in base.eval_sets if e.role == "in_domain" and not e.endpoints_only)
    torch.set_num_threads(os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="lmc-dtype-"))

    def sweep(dtype: str, name: str, mode=contextlib.nullcontext()):
        cfg = replace(base, store=str(work / name), dtype=dtype)
        t = time.perf_counter()
        pl = plan.prepare(cfg)
        with mode:
            local.run(pl, progress=False)
        wall = time.perf_counter() - t
        a = findings.run(Store(cfg.store), on_line)
        curves = a.curves.query("subset == 'all'").set_index(["model_a", "model_b", "eval_set", "alpha"])
        sizes = ", ".join(f"{d.name} {len(d)}" for k, d in enumerate(pl.datas) if k in pl.on_line)
        return wall, a, curves.sort_index(), sizes

    try:
        wall32, ref, ref_curves, sizes = sweep("float32", "float32")
        ref_bar = ref.barriers.query("metric == 'loss'").set_index(["model_a", "model_b", "eval_set"]).barrier
        print(machine())
        print(f"{len(base.models)} models, {ref.curves.groupby(['model_a', 'model_b']).ngroups} pairs x "
              f"{len(base.alphas)} α, examples on the lines: {sizes}; fp32 sweep {wall32:.1f} s, loss barriers on "
              f"{on_line} {ref_bar.min():.4f} .. {ref_bar.max():.4f}")
        print(f"{'dtype':>29} | wall s | max |Δ barrier| | mean |Δ barrier| | max |Δ loss| | max |Δ accuracy| | "
              f"same basins (ARI)")
        for k, (name, dtype, mode) in enumerate(rows(args.dtypes.split(","), torch.cuda.is_available())):
            wall, a, curves, _ = sweep(dtype, f"row{k}", mode)
            bar = a.barriers.query("metric == 'loss'").set_index(["model_a", "model_b", "eval_set"]).barrier
            d_bar = (bar - ref_bar).abs()
            d = (curves[["loss", "accuracy"]] - ref_curves[["loss", "accuracy"]]).abs()
            ari = adjusted_rand_score(ref.labels("paper"), a.labels("paper"))
            print(f"{name:>29} | {wall:6.1f} | {d_bar.max():16.2e} | {d_bar.mean():16.2e} | {d.loss.max():12.2e} | "
                  f"{d.accuracy.max():16.4f} | {ari:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rows(dtypes: list[str], gpu: bool):
    """(row name, sweep dtype, context) per row: TF32 is real on a GPU; on a CPU its matmuls are emulated, once
    rounding and once truncating the dropped bits (lmc_ray/testing/tf32.py: the two bracket what a GPU does)."""
    for dtype in dtypes:
        if dtype == "tfloat32" and not gpu:
            yield from ((f"tfloat32 (emulated, {r})", "float32", tf32.emulated(r)) for r in ("nearest", "truncate"))
        else:
            yield dtype, dtype, contextlib.nullcontext()


def _demo(args) -> dict:
    """The demo's population on its validation and diagnostic sets (512 of each unless --max-examples)."""
    models = demo_population.models(args, "dtype_error")
    diagnostic = str(Path(args.data).with_name("diagnostic.jsonl"))
    return {"models": [str(m) for m in models], "store": "unused", "alphas": 10, "eval_sets": [
        {"name": "validation", "path": args.data, "text": ["premise", "hypothesis"], "label": "label",
         "max_examples": 512},
        {"name": "diagnostic", "path": diagnostic, "text": ["premise", "hypothesis"], "label": "label",
         "max_examples": 512, "balance_by": "subcase", "role": "diagnostic"}]}


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    np.set_printoptions(precision=4)
    main()
