"""The former name of jobs/analyse.py ("cluster" means the Ray cluster elsewhere), kept so old commands work.

    python jobs/cluster.py --store results/run1
"""
from lmc_ray.cli import analyse, main

if __name__ == "__main__":
    main(analyse)
