"""Sweep every pair of models along the straight line between them (alias of `lmc-ray sweep`).

    python jobs/sweep.py --config configs/mnli.yaml
    ray submit cluster.yaml jobs/sweep.py -- --config configs/mnli.yaml
    python jobs/sweep.py             # no config: the built-in demo, offline, end to end
"""
from lmc_ray.cli import main, sweep

if __name__ == "__main__":
    main(sweep)
