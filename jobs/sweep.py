"""Sweep every pair of models along the straight line between them; results stream into a Parquet store.

    python jobs/sweep.py --config configs/mnli.yaml
    ray submit cluster.yaml jobs/sweep.py -- --config configs/mnli.yaml
    python jobs/sweep.py             # no config: the built-in demo, offline, end to end
"""
from lmc_ray import config, demo, plan, ray_sweep
from lmc_ray.cli import main


def sweep(argv=None):
    parser = config.parser(__doc__.splitlines()[0])
    parser.add_argument("--demo-models", type=int, default=demo.DemoConfig.n_models,
                        help="without --config: how many models the demo finetunes")
    args = parser.parse_args(argv)
    if not args.config:
        demo.run(demo.DemoConfig(n_models=args.demo_models))
        return
    cfg = config.load(args)
    ray_sweep.run(plan.prepare(cfg))
    print(f"store: {cfg.store}")


if __name__ == "__main__":
    main(sweep)
