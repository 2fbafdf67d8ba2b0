"""Measure `make demo`: first run from empty caches, then a second, cached run (wall time, peak memory).

    .venv/bin/python benchmarks/demo_budget.py [--with-setup] [--retrain]

Peak memory is the largest sum of RSS over the demo's whole process tree (driver, Ray, workers),
sampled every 0.2 s. --with-setup also times `make install` in a fresh clone (reported separately); --retrain also
times `lmc-ray demo --retrain` from empty caches (the population pretrained and finetuned here, on Ray Tune).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmc_ray.testing.memory import PeakRSS
from lmc_ray.testing.machine import machine

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], env: dict, cwd: Path) -> tuple[float, int, str]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakRSS(proc.pid) as mem:
        out = proc.communicate()[0]
    if proc.returncode:
        sys.exit(f"demo failed (exit {proc.returncode}):\n{out[-3000:]}")
    return time.perf_counter() - t, mem.peak, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--with-setup", action="store_true", help="also time `make install` in a fresh clone")
    p.add_argument("--retrain", action="store_true", help="also time `lmc-ray demo --retrain` from empty caches")
    args = p.parse_args()
    print(machine())
    if args.with_setup:
        with tempfile.TemporaryDirectory() as clone:
            subprocess.run(["git", "clone", "-q", str(ROOT), clone], check=True)
            t = time.perf_counter()
            subprocess.run(["make", "install"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
            print(f"set-up (make install, fresh clone): {time.perf_counter() - t:.0f} s")
    work = Path(tempfile.mkdtemp(prefix="lmc-demo-"))
    env = dict(os.environ, HOME=str(work / "home"), TRANSFORMERS_VERBOSITY="error")  # empty ~/.cache/lmc_ray
    cmd = [sys.executable, str(ROOT / "jobs" / "sweep.py")]
    runs = [("first run (empty caches)", cmd), ("second run (cached)", cmd)]
    if args.retrain:
        runs.append(("--retrain (empty caches)", [sys.executable, "-c", "from lmc_ray.cli import demo; demo()",
                                                  "--retrain"]))
    for label, command in runs:
        if command is not cmd:
            shutil.rmtree(work / "home", ignore_errors=True)
        wall, peak, out = measure(command, env, work)
        if command is cmd:
            shown = out
        stages = re.search(r"time \(s\): (.*)", out)
        print(f"{label}: {wall:.0f} s wall, peak memory {peak / 2**30:.2f} GiB"
              + (f"; stages: {stages.group(1)}" if stages else ""))
    print("summary of the cached run:")
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if " models, barriers on " in line)
    print("\n".join(line for line in lines[start:] if not line.startswith(("(", "\x1b", "20"))))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
