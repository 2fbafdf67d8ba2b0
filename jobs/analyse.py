"""Barriers, basins and generalization from a finished store (alias of `lmc-ray analyse`).

    python jobs/analyse.py --store results/run1
"""
from lmc_ray.cli import analyse, main

if __name__ == "__main__":
    main(analyse)
