"""Another name for jobs/analyse.py, as `lmc-ray cluster` is for `lmc-ray analyse`.

    python jobs/cluster.py --store results/run1
"""
from lmc_ray.cli import analyse, main

if __name__ == "__main__":
    main(analyse)
