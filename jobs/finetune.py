"""Finetune N copies of one base model on Ray Tune (alias of `lmc-ray finetune`).

    python jobs/finetune.py --config configs/finetune_cola_minilm.yaml
"""
from lmc_ray.cli import finetune, main

if __name__ == "__main__":
    main(finetune)
