"""A point of a stored line as a model (alias of `lmc-ray export`).

    python jobs/export.py --store results/run1 --pair m0 m1 --alpha 0.5 --out merged/
"""
from lmc_ray.cli import export, main

if __name__ == "__main__":
    main(export)
