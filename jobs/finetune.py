"""Finetune N copies of one base model on Ray Tune (one trial per seed); resumable.

    python jobs/finetune.py --config configs/finetune_cola_minilm.yaml
"""
import argparse

import yaml

from lmc_ray import finetune, ray_finetune
from lmc_ray.cli import main
from lmc_ray.config import ConfigError


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML: base, train, eval_sets, labels, output, seeds, ...")
    p.add_argument("--experiment-dir", default="results/tune", help="where Ray Tune keeps its state (for resume)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    args = p.parse_args(argv)
    try:
        with open(args.config) as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"finetune config: cannot read {args.config!r} ({e.strerror})") from None
    cfg = finetune.from_dict(raw)
    for url in ray_finetune.run(cfg, args.experiment_dir, cpus_per_trial=args.cpus_per_trial):
        print(url)


if __name__ == "__main__":
    main(run)
