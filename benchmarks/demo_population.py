"""The demo's population (shipped with the package, lmc_ray/demo_population/), for the benchmarks that measure on
real barriers; its data is what `make demo` writes."""
from __future__ import annotations

import argparse
from pathlib import Path

import lmc_ray

ROOT = Path(__file__).resolve().parents[1]
POPULATION = Path(lmc_ray.__file__).parent / "demo_population"  # lmc_ray.demo's, without importing its Ray


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=str(POPULATION))
    p.add_argument("--data", default=str(ROOT / "results" / "demo" / "data" / "validation.jsonl"))


def models(args: argparse.Namespace, script: str) -> list[Path]:
    """seed_0, seed_1, ... in seed order; one clear line if `make demo` has not run."""
    found = sorted(Path(args.models).glob("seed_*"), key=lambda m: int(m.name.split("_")[1]))
    if len(found) < 2 or not Path(args.data).exists():
        raise SystemExit(f"{script}: no population under {args.models}, or no {args.data} (run `make demo` first)")
    return found
