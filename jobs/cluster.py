"""Barriers, basins and generalization from a finished sweep store; writes STORE/report/index.html.

    python jobs/cluster.py --store results/run1
"""
import argparse

from lmc_ray import analysis, report
from lmc_ray.cli import main
from lmc_ray.store import Store


def cluster(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="the sweep's store (local path or s3://)")
    p.add_argument("--eval-set", help="eval set whose barriers define the clusters (default: the first)")
    p.add_argument("--metric", default="loss", help="loss or error")
    p.add_argument("--bootstrap", type=int, help="resamples per barrier interval (default 1000 when the sweep kept "
                                                 "per-example losses, else none; 0 = none)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--ood", metavar="KEY", help="per-model score that orders the paper-style figures, e.g. "
                   "'hans_full/heuristic,label=lexical_overlap,non-entailment/accuracy' (default: the first "
                   "diagnostic set's whole-set score, endpoints_only sets first)")
    p.add_argument("--scores", metavar="FILE", help="per-model results from elsewhere (CSV/Parquet: a model column, "
                                                     "then numeric columns), joined to the clusters")
    args = p.parse_args(argv)
    store = Store(args.store)
    a = analysis.run(store, args.eval_set, args.metric, args.bootstrap, args.level, args.scores)
    analysis.write(store, a)
    index = report.write(store, a, args.ood)
    print(analysis.text_summary(a))
    print(f"report: {index}")


if __name__ == "__main__":
    main(cluster)
