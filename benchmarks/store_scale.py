"""The analysis's read of a 1,000-model store (499,500 pairs), against one file per pair.

    .venv/bin/python benchmarks/store_scale.py [--models 1000] [--baseline-pairs 20000] [--no-s3]

Synthetic values (the layout, not the numbers, is what is measured) in the paper's shape: one eval set, one
subset, the 10-point α grid: 10 rows per pair. Written through the store's own code (Store.write_results), the
pairs in chunks of --chunk, each chunk a batch file, merged as the store merges a sweep's files. Measured, each
in a fresh process (peak resident memory of that process, imports included): the analysis's read
(lmc_ray.analysis.findings.read: run.json, curves and endpoints as pandas frames, only the active models kept).
The baseline is the layout before batch files, one Parquet file per pair (Store.pair_file), at --baseline-pairs
pairs, read the same way, against the same pairs in batch files. With S3 (moto's server on loopback, through a
relay that counts the requests on the wire): the same read of the 1,000-model store, its request count by kind.
"""
from __future__ import annotations

import argparse
import collections
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmc_ray.storage.store import CURVE_SCHEMA, Store, endpoint_table
from lmc_ray.testing.machine import machine

ALPHAS = [i / 9 for i in range(10)]
LAYOUT = [("mnli", ["all"])]


def fingerprint(n: int) -> dict:
    return {"models": [{"name": f"bert_{k:04d}"} for k in range(n)], "eval_sets": [{"name": "mnli"}],
            "alphas": ALPHAS, "dtype": "float32", "max_length": 128, "tokenizer": None, "format": 3}


def chunk_table(pairs: list[tuple[int, int]], rng) -> pa.Table:
    """10 rows per pair, as pair_table writes them, built column-wise (a Python loop over 499,500 pairs would
    measure table building, not the store)."""
    n = len(pairs) * len(ALPHAS)
    a = np.repeat([f"bert_{i:04d}" for i, _ in pairs], len(ALPHAS))
    b = np.repeat([f"bert_{j:04d}" for _, j in pairs], len(ALPHAS))
    cols = {"model_a": a, "model_b": b, "alpha": np.tile(ALPHAS, len(pairs)), "eval_set": np.full(n, "mnli"),
            "subset": np.full(n, "all"), "n_examples": np.full(n, 512)}
    for f in CURVE_SCHEMA:
        if f.name not in cols:
            cols[f.name] = rng.random(n)
    return pa.table(cols, schema=CURVE_SCHEMA)


def build(path: Path, n: int, pairs: list[tuple[int, int]], chunk: int, batched: bool) -> float:
    """A store of n models' endpoints and `pairs`; returns seconds."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    store = Store(str(path))
    store.open(fingerprint(n))
    for k in range(n):
        store.write_endpoint(k, endpoint_table(f"bert_{k:04d}", LAYOUT, [np.array([[512, *rng.random(4)]])]))
    for lo in range(0, len(pairs), chunk):
        part = pairs[lo:lo + chunk]
        table = chunk_table(part, rng)
        items = [(p, table.slice(10 * m, 10)) for m, p in enumerate(part)]
        if batched:
            store.write_results("curves", 0, items)
        else:  # the layout before batch files: one file per pair, never merged
            for (i, j), t in items:
                store.put_table(Store.pair_file(i, j), t)
    store.close()
    return time.perf_counter() - start


def read(url: str, options: str) -> None:
    """In a fresh process: the analysis's read; prints one JSON line."""
    from lmc_ray.analysis import findings

    start = time.perf_counter()
    names, _, curves, ends = findings.read(Store(url, json.loads(options)))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": len(curves), "models": len(names), "ends": len(ends),
                      "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def measure(url: str, options: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--read", url, json.dumps(options or {})], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def files(path: Path) -> int:
    return sum(1 for _ in (path / "curves").iterdir())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--baseline-pairs", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=4096, help="pairs per write (a batch file)")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 read")
    p.add_argument("--read", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.read:
        return read(*args.read)
    print(machine())
    n = args.models
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    root = Path(tempfile.mkdtemp(prefix="lmc-store-"))
    try:
        few = pairs[:args.baseline_pairs]
        m = max(j for _, j in few) + 1
        print(f"baseline: {len(few):,} pairs of {m} models")
        for name, batched in (("one file per pair", False), ("batch files", True)):
            built = build(root / name.replace(" ", "_"), m, few, args.chunk, batched)
            r = measure(str(root / name.replace(" ", "_")))
            print(f"  {name:18s} {files(root / name.replace(' ', '_')):>7,} files, written in {built:6.1f} s; read "
                  f"{r['seconds']:6.2f} s, peak {r['peak_gib']:.2f} GiB ({r['rows']:,} rows)")
            if batched:
                print(f"  batch files read {base['seconds'] / r['seconds']:.1f}x faster")
            base = r
        big = root / "big"
        built = build(big, n, pairs, args.chunk, True)
        r = measure(str(big))
        print(f"N = {n:,}: {len(pairs):,} pairs, {files(big)} files in curves/, written in {built:.0f} s; analysis "
              f"read {r['seconds']:.2f} s, peak {r['peak_gib']:.2f} GiB ({r['rows']:,} rows, {r['ends']} endpoint "
              f"rows, {r['models']} models)")
        if not args.no_s3:
            s3(big, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def s3(big: Path, n: int) -> None:
    import s3fs

    from lmc_ray.testing.s3 import S3Relay, moto_server

    with moto_server() as url:
        s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url})
        s3.mkdir("bench")
        s3.put(str(big), "bench/store", recursive=True)
        relay = S3Relay(url)
        r = measure("s3://bench/store", {"client_kwargs": {"endpoint_url": relay.url}})
        kinds = collections.Counter(m for m, _ in relay.requests)
        relay.close()
    print(f"N = {n:,} on S3 (moto, loopback): analysis read {r['seconds']:.2f} s, {len(relay.requests)} requests "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), {relay.sent / 2**20:.0f} MiB received")


if __name__ == "__main__":
    main()
