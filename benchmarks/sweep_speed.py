"""The sweep against the paper's own per-pair procedure, on the same population and data, in one run.

    .venv/bin/python benchmarks/sweep_speed.py [--models 8] [--examples 512] [--paper-pairs 1] [--repeat 2]

Population: N small BERT classifiers (4 layers, hidden 256) built from a config; data: the first K real
MNLI dev_matched examples. Methods:
  paper  for each pair: load both checkpoints from disk, build each interpolated state dict on the CPU,
         load it into a model, evaluate all 10 α (endpoints included), every input padded to 512, batch 512
  naive  the same loop with dynamic padding (each batch padded to its longest example)
  core   lmc-ray's compute core in one process (endpoints once per model, in-place lerp into a resident
         working model, length-sorted token-budget batches)
  ray    the same through Ray actors (lmc_ray.execution.ray_sweep, default layout), Ray's start-up not included
The paper and naive loops run on the first --paper-pairs / --naive-pairs pairs (they take minutes per pair
on a CPU); their full-matrix time is projected from the measured per-pair time, and their barriers are
checked against the product's on those pairs (within 1e-4).
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
import torch.nn.functional as F

from lmc_ray.analysis import barriers
from lmc_ray import config
from lmc_ray.execution import local, plan, ray_sweep
from lmc_ray.testing.population import make_population
from lmc_ray.testing.memory import PeakRSS
from lmc_ray.testing.machine import machine

ROOT = Path(__file__).resolve().parents[1]
MNLI = ROOT.parent / "shared" / "data" / "mnli" / "dev_matched.tsv"
LABELS = ["entailment", "neutral", "contradiction"]
ALPHAS = config.grid(10)


def per_pair_loop(paths, pairs, texts, labels, pad_to_max: bool, batch: int = 512) -> dict:
    """The paper's procedure (pad_to_max) or the fair naive loop (dynamic padding): curves per pair."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths[0])
    y = torch.tensor(labels)
    out = {}
    for a, b in pairs:
        sa = AutoModelForSequenceClassification.from_pretrained(paths[a]).state_dict()
        sb = AutoModelForSequenceClassification.from_pretrained(paths[b]).state_dict()
        model = AutoModelForSequenceClassification.from_pretrained(paths[a]).eval()
        curve = []
        for alpha in ALPHAS:
            model.load_state_dict({k: (1 - alpha) * sa[k] + alpha * sb[k] if sa[k].is_floating_point() else sa[k]
                                   for k in sa})
            losses, hits = [], []
            with torch.no_grad():
                for s in range(0, len(labels), batch):
                    enc = tok(texts[0][s: s + batch], texts[1][s: s + batch], truncation=True, max_length=512,
                              padding="max_length" if pad_to_max else "longest", return_tensors="pt")
                    logits = model(**enc).logits
                    losses.append(F.cross_entropy(logits, y[s: s + batch], reduction="sum"))
                    hits.append((logits.argmax(-1) == y[s: s + batch]).sum())
            curve.append(float(sum(losses)) / len(labels))
        out[(a, b)] = np.array(curve)
    return out


def product_curves(store: Path, names: list[str]) -> dict:
    df = pd.read_parquet(store / "curves")
    df = df[df.subset == "all"].sort_values("alpha")
    return {(names.index(a), names.index(b)): g.loss.to_numpy() for (a, b), g in df.groupby(["model_a", "model_b"])}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--paper-pairs", type=int, default=1)
    p.add_argument("--naive-pairs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="runs of the core and of Ray, alternated; the fastest counts")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    df = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=max(args.examples, 3000))
    work = Path(tempfile.mkdtemp(prefix="lmc-bench-"))
    paths = make_population(work / "pop", args.models, list(df.premise) + list(df.hypothesis), LABELS,
                            layers=args.layers, hidden=args.hidden, heads=4, noise=0.02, vocab_size=8000)
    df = df.iloc[: args.examples]
    texts = [list(df.premise), list(df.hypothesis)]
    labels = [LABELS.index(v) for v in df.gold_label]
    names = [str(x) for x in paths]
    n_pairs = args.models * (args.models - 1) // 2
    cfg = lambda store, **kw: config.from_dict({  # noqa: E731
        "models": names, "store": str(store), "alphas": 10, "cache_dir": str(work / "cache"),
        "eval_sets": [{"name": "mnli", "path": str(MNLI), "text": ["premise", "hypothesis"], "label": "gold_label",
                       "max_examples": args.examples}], **kw})
    pl = plan.prepare(cfg(work / "probe"))
    real_tokens = pl.datas[0].n_tokens
    print(machine())
    print(f"population: {args.models} BERT classifiers ({args.layers} layers, hidden {args.hidden}), {n_pairs} pairs, "
          f"{len(ALPHAS)} α; data: first {args.examples} MNLI dev_matched examples, {real_tokens} non-padding tokens")

    results = {}

    def record(name, seconds, pairs, peak, projected=False):
        ex = pairs * len(ALPHAS) * args.examples
        results[name] = seconds / pairs * n_pairs
        print(f"{name:>6}: {seconds:8.1f} s for {pairs} pairs ({'projected ' if projected else ''}"
              f"{results[name]:.1f} s for all {n_pairs}); {pairs / seconds:.3f} pairs/s, {ex / seconds:,.0f} examples/s, "
              f"{pairs * len(ALPHAS) * real_tokens / seconds:,.0f} non-padding tokens/s, peak memory {peak / 2**30:.2f} GiB")

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    n_actors, _, cpus = ray_sweep.layout(cfg(work / "probe"), args.models)
    print(f"ray layout: {n_actors} actor(s) × {cpus:g} CPU (the config's defaults); Ray's start-up not timed")
    # This machine's timings drift by tens of percent over minutes: core and Ray alternate, and the fastest
    # run of each counts (every run is printed).
    runs = {"core": [], "ray": []}
    for r in range(args.repeat):
        for name, run in (("core", local.run), ("ray", ray_sweep.run)):
            with PeakRSS(pss=name == "ray") as mem:
                t = time.perf_counter()
                run(plan.prepare(cfg(work / f"{name}{r}")), progress=False)
                runs[name].append((time.perf_counter() - t, mem.peak, mem.peak_pss))
            print(f"        {name} run {r + 1}: {runs[name][-1][0]:.1f} s", flush=True)
    for name, got in runs.items():
        seconds, peak, pss = min(got)
        record(name, seconds, n_pairs, peak)
    print(f"        ray's peak memory as PSS (shared object-store pages counted once): {pss / 2**30:.2f} GiB")
    ray.shutdown()
    core_curves = product_curves(work / "core0", names)
    pairs = sorted(core_curves)
    for name, k, pad in (("naive", args.naive_pairs, False), ("paper", args.paper_pairs, True)):
        with PeakRSS() as mem:
            t = time.perf_counter()
            curves = per_pair_loop(names, pairs[:k], texts, labels, pad_to_max=pad)
            record(name, time.perf_counter() - t, k, mem.peak, projected=k < n_pairs)
        worst = max(abs(barriers.paper(c, ALPHAS) - barriers.paper(core_curves[pr], ALPHAS)) for pr, c in curves.items())
        print(f"        {name} barriers vs the product's on the same {k} pairs: max |Δ| = {worst:.2e} "
              f"({'OK' if worst <= 1e-4 else 'MISMATCH'} at 1e-4)")
    ray_curves = product_curves(work / "ray0", names)
    worst = max(abs(barriers.paper(ray_curves[pr], ALPHAS) - barriers.paper(core_curves[pr], ALPHAS)) for pr in pairs)
    print(f"        ray barriers vs core: max |Δ| = {worst:.2e}")
    print(f"ratios: paper/core {results['paper'] / results['core']:.1f}x, naive/core {results['naive'] / results['core']:.1f}x, "
          f"ray/core {results['ray'] / results['core']:.2f}x (target ≥ 20x, ≥ 3x, ≤ 1.2x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
