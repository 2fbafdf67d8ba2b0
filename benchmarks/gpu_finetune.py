"""Finetuning one seed on one GPU (no Ray): what a population of the paper's size costs, fp32 against bf16 autocast.

    python benchmarks/gpu_finetune.py [--data-dir ../shared/data] [--layers 12 --hidden 768 --heads 12]

Base: a BERT classifier built from a config (random weights: nothing can be downloaded there), WordPiece
vocabulary from the MNLI text. Training data: the first --examples MNLI dev_matched pairs (the only MNLI split
here; what is measured is speed), max length 128, batch 32 — the paper's QQP recipe is batch 32 for 34,110 steps.
For each dtype, `lmc_ray.training.finetune.train` trains seed 0 for --steps steps, exactly as a Tune trial does; the
steps between its two metric reports are timed (loading, tokenising and saving left out). Printed: ms per step,
examples/s, peak GPU memory, the projected time of one paper-sized run (34,110 steps) and of 100 seeds one after
another on this device; then how far bf16's weights land from fp32's, relative to how far training moved them
(both runs see the same batches: the order is drawn on the CPU from the seed). On a CPU (toy size,
tests/test_benchmarks.py) run it with --layers 2 --hidden 64 --heads 2 --examples 256 --steps 8.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from lmc_ray.config import EvalSetSpec
from lmc_ray.training import finetune
from lmc_ray.testing.machine import machine
from lmc_ray.testing.population import make_population

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["entailment", "neutral", "contradiction"]
PAPER_STEPS, PAPER_SEEDS = 34_110, 100


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--examples", type=int, default=8192)
    p.add_argument("--steps", type=int, default=200, help="training steps per dtype (batch 32)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mnli_path = Path(args.data_dir) / "mnli" / "dev_matched.tsv"
    mnli = pd.read_csv(mnli_path, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-gpu-ft-"))
    print(machine())
    try:
        base = make_population(work / "base", 1, list(mnli.premise) + list(mnli.hypothesis), LABELS,
                               layers=args.layers, hidden=args.hidden, heads=args.heads, noise=0.0,
                               vocab_size=30522)[0]
        train = EvalSetSpec(name="train", path=str(mnli_path), text=["premise", "hypothesis"], label="gold_label",
                            max_examples=args.examples)
        print(f"base: BERT, {args.layers} layers, hidden {args.hidden}; training on the first {args.examples} MNLI "
              f"dev_matched pairs, batch 32, max length 128, {args.steps} steps per dtype, on {device.type}")
        print(f"{'dtype':>9} | ms per step | examples/s | peak GPU GiB | one paper run ({PAPER_STEPS:,} steps) | "
              f"{PAPER_SEEDS} seeds, one after another")
        for dtype in ("float32", "bfloat16"):
            cfg = finetune.FinetuneConfig(base=str(base), train=train, eval_sets=[], labels=LABELS,
                                          output=str(work / dtype), seeds=[0], epochs=args.steps * 32 / args.examples,
                                          batch_size=32, reports=2, max_length=128, device=device.type, dtype=dtype,
                                          cache_dir=str(work / "cache"))
            marks = []
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            finetune.train(cfg, 0, report=lambda m: marks.append((m["step"], time.perf_counter())))
            (s0, t0), (s1, t1) = marks
            step = (t1 - t0) / (s1 - s0)
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "-"
            print(f"{dtype:>9} | {step * 1e3:11.1f} | {32 / step:10.0f} | {peak:>12} | "
                  f"{PAPER_STEPS * step / 3600:27.2f} h | {PAPER_SEEDS * PAPER_STEPS * step / 3600:9.1f} h")
        start, fp32, bf16 = (load_file(str(d / "model.safetensors")) for d in
                             (base, work / "float32" / "seed_0", work / "bfloat16" / "seed_0"))
        keys = [k for k in fp32 if k in start and fp32[k].is_floating_point()]
        moved = sum(float((fp32[k] - start[k]).double().pow(2).sum()) for k in keys) ** 0.5
        apart = sum(float((bf16[k] - fp32[k]).double().pow(2).sum()) for k in keys) ** 0.5
        print(f"bf16 autocast vs fp32 after {args.steps} steps: weights {apart:.3g} apart, {apart / moved:.1%} of the "
              f"{moved:.3g} that training moved them (same data order)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
