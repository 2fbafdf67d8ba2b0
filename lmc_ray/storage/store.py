"""The Parquet store: one file per finished pair, written atomically, local or s3://.

Files:
    STORE/run.json                          the configuration that produced the data, and what identifies
                                            each model's weights (a changed checkpoint is refused on resume)
    STORE/_lease.json                       held by the one sweep writing the store (lmc_ray/storage/lease.py)
    STORE/curves/pair-00003-00017.parquet   one file per pair (indices in config order, a < b)
    STORE/endpoints/model-00003.parquet     each model alone (α = 0 of its pairs), evaluated once
    STORE/examples/{curves,endpoints}/...   per-example loss and correctness, when the sweep keeps them
                                            (per_example: true), written before the file above it
    STORE/_tmp/                             files being written; ignored by readers; what a dead writer
                                            left is removed by the next lease holder

A local file is written under _tmp/ and renamed into place (atomic on POSIX). An S3 object is
written with a single PUT (or a multipart upload completed last), which S3 makes visible whole or not
at all, so no reader of STORE/curves ever sees part of a file.
"""
from __future__ import annotations

import io
import json
import os
import re
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from . import lease as leases
from ..errors import ConfigError, cause
from ..compute.metrics import COLUMNS

_METRIC_FIELDS = [("eval_set", pa.string()), ("subset", pa.string()), ("n_examples", pa.int64())] + [
    (c, pa.float64()) for c in COLUMNS[1:]]
# `distance` (‖θ_B − θ_A‖₂, the same on every row of a pair) came later: read through this schema, a pair
# stored before it has nulls there.
CURVE_SCHEMA = pa.schema([("model_a", pa.string()), ("model_b", pa.string()), ("alpha", pa.float64()),
                          *_METRIC_FIELDS, ("distance", pa.float64())])
ENDPOINT_SCHEMA = pa.schema([("model", pa.string()), *_METRIC_FIELDS])
_EXAMPLE_FIELDS = [("eval_set", pa.string()), ("example", pa.int32()), ("loss", pa.float32()),
                   ("correct", pa.float32())]
PAIR_EXAMPLES_SCHEMA = pa.schema([("model_a", pa.string()), ("model_b", pa.string()), ("alpha", pa.float64()),
                                  *_EXAMPLE_FIELDS])
ENDPOINT_EXAMPLES_SCHEMA = pa.schema([("model", pa.string()), *_EXAMPLE_FIELDS])
_PAIR = re.compile(r"pair-(\d+)-(\d+)\.parquet$")
_MODEL = re.compile(r"model-(\d+)\.parquet$")

# (eval set name, its subset names) in the order Metrics rows come in.
SetSubsets = list[tuple[str, list[str]]]


class Store:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = isinstance(self.fs, LocalFileSystem)
        # One spelling per store (`run1`, `./run1/`): the lease is per path.
        self.root = os.path.abspath(self.root) if self.local else self.root.rstrip("/")
        self.lease: leases.Lease | None = None

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- opening -------------------------------------------------------------------------------
    def open(self, fingerprint: dict, weights: dict[str, str] | None = None, lease_timeout: float = 120.0) -> None:
        """Take the store's lease, then create it or reopen it for this configuration and these weights;
        refuse a store written by another configuration or with a model whose weights changed since."""
        try:
            self.lease = leases.acquire(self.fs, self.path("_lease.json"), self.url, lease_timeout, self.local)
        except ConfigError:
            raise
        except Exception as e:  # the lease is the store's first write: an unwritable store ends here
            raise ConfigError(f"store {self.url!r}: not writable ({cause(e)})") from None
        run = self.path("run.json")
        now = json.loads(json.dumps({"fingerprint": fingerprint, "weights": weights or {}}))
        try:
            old = json.loads(self.fs.cat_file(run)) if self.fs.exists(run) else None
        except Exception as e:
            raise ConfigError(f"store {self.url!r}: cannot read ({cause(e)})") from None
        if old is not None:
            before = old.get("fingerprint", {})
            if before != now["fingerprint"]:
                key = next((k for k in [*now["fingerprint"], *before] if before.get(k) != now["fingerprint"].get(k)), "?")
                raise ConfigError(f"store {self.url!r} holds a run with a different configuration ({key} differ); "
                                  "use a new store path or the original configuration")
            stored = old.get("weights", {})
            changed = next((m for m in now["weights"] if m in stored and stored[m] != now["weights"][m]), None)
            if changed is not None:
                raise ConfigError(f"store {self.url!r}: model {changed!r} changed since the store was written "
                                  f"(weights {stored[changed]} then, {now['weights'][changed]} now); restore it or "
                                  "use a new store path")
        try:
            self.cleanup()
            if old != now:  # new, or an older store that did not record the weights yet
                self.put("run.json", json.dumps(now, indent=2, sort_keys=True).encode())
        except Exception as e:
            raise ConfigError(f"store {self.url!r}: not writable ({cause(e)})") from None

    def close(self) -> None:
        """Give up the lease; an empty _tmp/ is not left behind."""
        if self.local:
            try:
                os.rmdir(self.path("_tmp"))
            except OSError:
                pass
        if self.lease is not None:
            self.lease.release()

    def cleanup(self) -> None:
        """Remove what an interrupted write left: local temporary files, or unfinished S3 multipart uploads
        (invisible to readers, but stored and billed until aborted). Called only by the lease holder, so
        everything found is a dead writer's."""
        if hasattr(self.fs, "list_multipart_uploads"):
            bucket, _, prefix = self.root.partition("/")
            for upload in self.fs.list_multipart_uploads(bucket):
                if upload["Key"].startswith(prefix + "/"):
                    self.fs.abort_mpu(bucket, upload["Key"], upload["UploadId"])
            return
        tmp = self.path("_tmp")
        if self.fs.exists(tmp):
            self.fs.rm(tmp, recursive=True)

    # -- writing -------------------------------------------------------------------------------
    def put(self, rel: str, data: bytes) -> None:
        if self.lease is not None:
            self.lease.check()
        final = self.path(rel)
        if not self.local:
            self.fs.pipe_file(final, data)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = self.path("_tmp", f"{uuid.uuid4().hex}.part")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def put_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.put(rel, buf.getvalue())

    @staticmethod
    def pair_file(i: int, j: int, examples: bool = False) -> str:
        return f"{'examples/' if examples else ''}curves/pair-{i:05d}-{j:05d}.parquet"

    @staticmethod
    def endpoint_file(i: int, examples: bool = False) -> str:
        return f"{'examples/' if examples else ''}endpoints/model-{i:05d}.parquet"

    def write_pair(self, i: int, j: int, table: pa.Table, examples: bool = False) -> None:
        self.put_table(self.pair_file(i, j, examples), table)

    def write_endpoint(self, i: int, table: pa.Table, examples: bool = False) -> None:
        self.put_table(self.endpoint_file(i, examples), table)

    # -- reading -------------------------------------------------------------------------------
    def _indices(self, sub: str, pattern: re.Pattern) -> list[tuple[int, ...]]:
        d = self.path(sub)
        if not self.fs.exists(d):
            return []
        found = [pattern.search(p) for p in self.fs.ls(d, detail=False)]
        return [tuple(int(g) for g in m.groups()) for m in found if m]

    def done_pairs(self) -> set[tuple[int, int]]:
        return set(self._indices("curves", _PAIR))

    def read(self, rel: str) -> pa.Table:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f)

    def read_endpoint(self, i: int) -> pa.Table:
        return self.read(self.endpoint_file(i))

    def done_endpoints(self) -> set[int]:
        return {i for (i,) in self._indices("endpoints", _MODEL)}

    def curves(self):
        """All stored curves as one pyarrow dataset (temporary files are never matched): `.to_table().to_pandas()`,
        or filtered and projected first (`.to_table(filter=..., columns=...)`), or handed to duckdb."""
        return self._dataset("curves", CURVE_SCHEMA)

    def endpoints(self):
        """Each model alone (α = 0 of its lines, and the endpoints_only sets), as one pyarrow dataset."""
        return self._dataset("endpoints", ENDPOINT_SCHEMA)

    def _dataset(self, sub: str, schema: pa.Schema):
        import pyarrow.dataset as ds

        return ds.dataset(self.path(sub), filesystem=self.fs, format="parquet", schema=schema)

    def meta(self) -> dict:
        """run.json: the settings that decide the values (fingerprint) and each model's pinned weights."""
        try:
            return json.loads(self.fs.cat_file(self.path("run.json")))
        except FileNotFoundError:
            raise ConfigError(f"store {self.url!r}: no run.json (not an lmc-ray store, or nothing written yet)") from None


def _metric_columns(subsets: SetSubsets, metrics: list[np.ndarray]) -> dict[str, list]:
    cols = {"eval_set": [], "subset": [], **{c: [] for c in COLUMNS}}
    for (s, subs), m in zip(subsets, metrics):
        for k, sub in enumerate(subs):
            cols["eval_set"].append(s)
            cols["subset"].append(sub)
            for c, v in zip(COLUMNS, m[k]):
                cols[c].append(float(v))
    cols["n_examples"] = [int(v) for v in cols["n_examples"]]
    return cols


def _model_rows(model: str, cols: dict, schema: pa.Schema) -> pa.Table:
    return pa.table({"model": [model] * len(cols["eval_set"]), **cols}, schema=schema)


def _pair_rows(model_a: str, model_b: str, by_alpha: dict, columns, schema: pa.Schema) -> pa.Table:
    """One block of rows per α, each from `columns(values at that α)`."""
    parts = []
    for alpha in sorted(by_alpha):
        cols = columns(by_alpha[alpha])
        n = len(cols["eval_set"])
        parts.append(pa.table({"model_a": [model_a] * n, "model_b": [model_b] * n, "alpha": [float(alpha)] * n,
                               **cols}, schema=schema))
    return pa.concat_tables(parts)


def endpoint_table(model: str, subsets: SetSubsets, metrics: list[np.ndarray]) -> pa.Table:
    return _model_rows(model, _metric_columns(subsets, metrics), ENDPOINT_SCHEMA)


def metrics_from_endpoint(table: pa.Table, subsets: SetSubsets) -> list[np.ndarray]:
    """Inverse of endpoint_table, in the order of `subsets`."""
    d = table.to_pydict()
    at = {key: row for key, row in zip(zip(d["eval_set"], d["subset"]), zip(*(d[c] for c in COLUMNS)))}
    return [np.array([at[(s, sub)] for sub in subs], dtype=np.float64) for s, subs in subsets]


def pair_table(model_a: str, model_b: str, subsets: SetSubsets, by_alpha: dict[float, list[np.ndarray]],
               distance: float | None = None) -> pa.Table:
    def columns(m):
        cols = _metric_columns(subsets, m)
        return {**cols, "distance": [distance] * len(cols["eval_set"])}

    return _pair_rows(model_a, model_b, by_alpha, columns, CURVE_SCHEMA)


def _example_columns(sets: list[str], examples: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {"eval_set": np.repeat(sets, [e.shape[1] for e in examples]),
            "example": np.concatenate([np.arange(e.shape[1], dtype=np.int32) for e in examples]),
            "loss": np.concatenate([e[0] for e in examples]), "correct": np.concatenate([e[1] for e in examples])}


def endpoint_examples(model: str, sets: list[str], examples: list[np.ndarray]) -> pa.Table:
    return _model_rows(model, _example_columns(sets, examples), ENDPOINT_EXAMPLES_SCHEMA)


def pair_examples(model_a: str, model_b: str, sets: list[str], by_alpha: dict[float, list[np.ndarray]]) -> pa.Table:
    return _pair_rows(model_a, model_b, by_alpha, lambda e: _example_columns(sets, e), PAIR_EXAMPLES_SCHEMA)
