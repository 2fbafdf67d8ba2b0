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
    args = p.parse_args(argv)
    store = Store(args.store)
    a = analysis.run(store, args.eval_set, args.metric)
    analysis.write(store, a)
    index = report.write(store, a)
    print(analysis.text_summary(a))
    print(f"report: {index}")


if __name__ == "__main__":
    main(cluster)
