"""Barriers, basins and generalization from a finished store (alias of `lmc-ray cluster`).

    python jobs/cluster.py --store results/run1
"""
from lmc_ray.cli import cluster, main

if __name__ == "__main__":
    main(cluster)
