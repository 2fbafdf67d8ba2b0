"""Memory of the packed path against the size of an endpoints-only set: all 30,000 HANS rows vs a tenth of them.

    python benchmarks/packed_memory.py [--rows 3000 30000] [--layers 2 --hidden 192 --heads 12]

Each size runs in a fresh process: a BERT built from a config (12 heads, as BERT-base, so the dense fallback's
score matrix is BERT-base's), the HANS rows as one endpoints-only set in the GPU's 32,768-token streams,
FlexAttention compiled by inductor (on a CPU, inductor's CPU kernel: like the GPU's, it never holds a stream's
score matrix). It prints the streams, their real-token fraction, the compiles, the seconds and the process's
peak resident memory, next to what one stream's dense score matrix would take (eager FlexAttention, the
fallback past torch's recompile limit). Flat peak memory across sizes is what lets any set size fit a GPU.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANS = "hans/heuristics_evaluation_set.regenerated.tsv"
LABELS = ["entailment", "neutral", "contradiction"]


def peak_rss() -> int:
    """VmHWM: the most resident memory this process has had (no psutil needed)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(args) -> None:
    import pandas as pd
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoModelForSequenceClassification

    from lmc_ray import config
    from lmc_ray.compute.core import Core
    from lmc_ray.compute.metrics import LOSS
    from lmc_ray.compute.models import quiet
    from lmc_ray.execution import plan
    from lmc_ray.testing.population import make_population

    quiet()
    data = Path(args.data_dir)
    mnli = pd.read_csv(data / "mnli" / "dev_matched.tsv", sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-mem-"))
    paths = make_population(work / "pop", 2, list(mnli.premise) + list(mnli.hypothesis), LABELS, layers=args.layers,
                            hidden=args.hidden, heads=args.heads, vocab_size=30522)
    hans = {"name": "hans_full", "path": str(data / HANS), "text": ["sentence1", "sentence2"], "label": "gold_label",
            "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]},
            "max_examples": args.child}
    line = {"name": "mnli", "path": str(data / "mnli" / "dev_matched.tsv"), "text": ["premise", "hypothesis"],
            "label": "gold_label", "max_examples": 32}
    cfg = config.from_dict({"models": [str(p) for p in paths], "store": str(work / "s"), "device": "cpu",
                            "cache_dir": str(work / "c"), "eval_sets": [line, {**hans, "endpoints_only": True}]})
    datas = plan.prepare(cfg).datas
    model = AutoModelForSequenceClassification.from_pretrained(paths[0])
    before = peak_rss()
    t = time.perf_counter()
    core = Core(model, datas, "cpu", "float32", 32768, on_line=[0], packing=True, compiler="inductor")
    core.working.set(core.resident(model.state_dict()))
    ev = core.evaluators[1]
    metrics = ev()
    processed = sum(b["input_ids"].numel() for b in ev.batches)
    dense = max(b["input_ids"].numel() for b in ev.batches) ** 2 * args.heads * 4
    print(f"{args.child:6d} rows | {len(ev.batches):7d} | {ev.data.n_tokens / processed:11.0%} | "
          f"{int(counters['stats']['unique_graphs']):8d} | {time.perf_counter() - t:7.1f} | "
          f"{before / 2**30:13.2f} | {peak_rss() / 2**30:13.2f} | {dense / 2**30:14.1f} | {metrics[0, LOSS]:.4f}",
          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--rows", type=int, nargs="+", default=[3000, 30000])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT))
    from lmc_ray.testing.machine import machine

    print(machine())
    print(f"BERT, {args.layers} layers, hidden {args.hidden}, {args.heads} heads; HANS rows endpoints-only, packed in "
          "32,768-token streams, FlexAttention compiled by inductor; float32\n")
    print("  set size | streams | real tokens | compiles | seconds | peak GiB before | peak GiB after | dense scores GiB "
          "| loss")
    for rows in args.rows:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", str(rows)], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
