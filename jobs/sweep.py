"""Sweep every pair of models along the straight line between them; results stream into a Parquet store.

    python jobs/sweep.py --config configs/mnli.yaml
    ray submit cluster.yaml jobs/sweep.py -- --config configs/mnli.yaml
"""
from lmc_ray import config, plan, ray_sweep
from lmc_ray.cli import main


def sweep(argv=None):
    args = config.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = config.load(args)
    ray_sweep.run(plan.prepare(cfg))
    print(f"store: {cfg.store}")


if __name__ == "__main__":
    main(sweep)
