"""What each of the core's techniques buys, measured one at a time on the same models and data.

    .venv/bin/python benchmarks/techniques.py [--rounds 5] [--examples 512]

Two small BERT classifiers (4 layers, hidden 256, as in sweep_speed.py) and the first 512 MNLI dev_matched
examples. Each step adds one technique to the one before; each is timed as the seconds to put one
interpolated model in place and evaluate it on every example. The steps run in alternating rounds (this
machine drifts by tens of percent over minutes) and the median round counts. Every step's loss is checked
against the first's.

  naive     state dict rebuilt on the CPU and loaded; batches of 512 in file order, each padded to its longest
  lerp      the weights written in place by one lerp per tensor into a resident working model
  sorted    length-sorted batches under a budget of 8,192 padded tokens (at most 256 examples)
  2048      the budget at 2,048 padded tokens (config: batch_tokens auto on a CPU)
  trim      the last layer computes position 0 only (lmc_ray/compute/trim.py)
Not here: the endpoints evaluated once per model rather than once per pair (8 of the 10 α per pair: 1.25x,
by counting), and the padding to 512 that the paper's procedure adds (sweep_speed.py measures both).
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from lmc_ray import config
from lmc_ray.execution import plan
from lmc_ray.compute.evaluate import Evaluator
from lmc_ray.compute.interpolate import WorkingModel
from lmc_ray.compute.metrics import LOSS
from lmc_ray.testing.population import make_population
from lmc_ray.compute.trim import first_token_only
from lmc_ray.testing.machine import machine

ROOT = Path(__file__).resolve().parents[1]
MNLI = ROOT.parent / "shared" / "data" / "mnli" / "dev_matched.tsv"
LABELS = ["entailment", "neutral", "contradiction"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    df = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-tech-"))
    paths = make_population(work / "pop", 2, list(df.premise) + list(df.hypothesis), LABELS, layers=args.layers,
                            hidden=args.hidden, heads=4, noise=0.02, vocab_size=8000)
    cfg = config.from_dict({"models": [str(x) for x in paths], "store": str(work / "s"), "cache_dir": str(work / "c"),
                            "eval_sets": [{"name": "mnli", "path": str(MNLI), "text": ["premise", "hypothesis"],
                                           "label": "gold_label", "max_examples": args.examples}]})
    data = plan.prepare(cfg).datas[0]
    from transformers import AutoModelForSequenceClassification

    sa, sb = (AutoModelForSequenceClassification.from_pretrained(x).state_dict() for x in paths)
    plain = AutoModelForSequenceClassification.from_pretrained(paths[0]).eval()
    trimmed = copy.deepcopy(plain)
    first_token_only(trimmed)
    alpha = 0.4

    def naive():
        plain.load_state_dict({k: (1 - alpha) * sa[k] + alpha * sb[k] if sa[k].is_floating_point() else sa[k]
                               for k in sa})
        return file_order()

    file_order = Evaluator(data, plain, "cpu", batch_tokens=10**9, max_batch_size=512)  # one batch: the longest pads all

    def in_place(evaluator):
        wm = WorkingModel(evaluator.model)
        wa, wb = wm.weights_of(sa), wm.weights_of(sb)

        def step():
            wm.set(wa, wb, alpha)
            return evaluator()
        return step

    steps = {
        "naive": naive,
        "lerp": in_place(file_order),
        "sorted": in_place(Evaluator(data, plain, "cpu", 8192, 256)),
        "2048": in_place(Evaluator(data, plain, "cpu", 2048, 256)),
        "trim": in_place(Evaluator(data, trimmed, "cpu", 2048, 256)),
    }
    print(machine())
    print(f"2 BERTs ({args.layers} layers, hidden "
          f"{args.hidden}); {len(data)} MNLI examples, {data.n_tokens} non-padding tokens; {args.rounds} rounds")
    times = {k: [] for k in steps}
    losses = {}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            losses[name] = float(step()[0, LOSS])
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["naive"])
    prev = base
    print(f"{'step':>7} | s per α (median) | rounds | vs previous | vs naive | loss - naive's loss")
    for name, got in times.items():
        med = statistics.median(got)
        print(f"{name:>7} | {med:16.3f} | {' '.join(f'{x:.2f}' for x in got)} | {prev / med:10.2f}x | "
              f"{base / med:7.2f}x | {losses[name] - losses['naive']:+.1e}")
        prev = med
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
