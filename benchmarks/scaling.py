"""How the sweep grows with N on one machine: N = 10, 25, 50, 100 small models through Ray.

    .venv/bin/python benchmarks/scaling.py [--sizes 10 25 50 100] [--examples 32]

Population: N small BERT classifiers built from a config (1 layer, hidden 32, vocabulary 8,000: tiny, so
that N = 100 fits a 2-core machine in minutes; what is measured is how the sweep scales, not one model's
speed); data: the first K real MNLI dev_matched examples; the paper's 10-point α grid. Each N runs through
lmc_ray.execution.ray_sweep on a local Ray instance (--actors 2 by default, each holding N / actors resident models, each
model's weights sent to each actor once). Printed per N: wall seconds, pairs/s, peak memory of the whole
process tree (driver, raylet, actors; PSS, with summed RSS beside it), and the growth of wall time against N
and against the number of pairs, and how evenly the actors were kept busy (seconds each spent computing: the
spread is the check that work stays balanced when N is not a multiple of the actors, e.g. --actors 3).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from lmc_ray import config
from lmc_ray.execution import plan, ray_sweep
from lmc_ray.testing.memory import PeakRSS
from lmc_ray.storage.store import Store
from lmc_ray.testing.population import make_population
from lmc_ray.testing.machine import machine

ROOT = Path(__file__).resolve().parents[1]
MNLI = ROOT.parent / "shared" / "data" / "mnli" / "dev_matched.tsv"
LABELS = ["entailment", "neutral", "contradiction"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100])
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--actors", type=int, default=2, help="actors sharing the machine (>1: weights travel between them)")
    args = p.parse_args()
    df = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-scaling-"))
    paths = [str(x) for x in make_population(work / "pop", max(args.sizes), list(df.premise) + list(df.hypothesis),
                                             LABELS, layers=args.layers, hidden=args.hidden, heads=2, noise=0.02,
                                             vocab_size=8000)]
    print(machine())
    print(f"models: {args.layers} layers, hidden {args.hidden}; data: first {args.examples} MNLI dev_matched examples; "
          f"10 α, endpoints included")
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    rows = []
    for n in args.sizes:
        cfg = config.from_dict({
            "models": paths[:n], "store": str(work / f"store-{n}"), "alphas": 10, "cache_dir": str(work / "cache"),
            "actors": args.actors,
            "eval_sets": [{"name": "mnli", "path": str(MNLI), "text": ["premise", "hypothesis"],
                           "label": "gold_label", "max_examples": args.examples}]})
        with PeakRSS(every=0.5, pss=True) as mem:
            t = time.perf_counter()
            pl = plan.prepare(cfg)
            busy = ray_sweep.run(pl, progress=False).busy
            wall = time.perf_counter() - t
        pairs = n * (n - 1) // 2
        assert len(Store(pl.cfg.store).done_pairs()) == pairs
        rows.append({"N": n, "pairs": pairs, "wall_s": wall, "pairs_per_s": pairs / wall,
                     "peak_GiB": mem.peak_pss / 2**30})
        r = rows[-1]
        print(f"N={n:4d}: {pairs:5d} pairs in {wall:7.1f} s, {r['pairs_per_s']:6.2f} pairs/s, peak memory of the "
              f"whole Ray process tree {r['peak_GiB']:.2f} GiB PSS ({mem.peak / 2**30:.2f} GiB summed RSS); "
              f"{ray_sweep.balance(busy)}", flush=True)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    first = rows[0]
    for r in rows[1:]:
        print(f"N {first['N']} -> {r['N']}: wall x{r['wall_s'] / first['wall_s']:.1f} for x{r['pairs'] / first['pairs']:.1f} "
              f"pairs (x{r['N'] / first['N']:.1f} models); memory x{r['peak_GiB'] / first['peak_GiB']:.2f}")


if __name__ == "__main__":
    main()
