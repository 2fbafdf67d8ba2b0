"""The Parquet store: one file per finished pair, written atomically, local or s3://.

Files:
    STORE/run.json                          what the store holds, per component: each model (name, reference,
                                            pinned weights) and each eval set (its selection) ever added, in the
                                            order added (a model's index), and the settings every value shares;
                                            plus the last run's configuration ("fingerprint")
    STORE/_lease.json                       held by the one sweep writing the store (lmc_ray/storage/lease.py)
    STORE/curves/pair-00003-00017.parquet   one file per pair (store indices, a < b), the eval sets of group 0
    STORE/curves/pair-00003-00017-g1.parquet  the same pair's eval sets added later (group 1, 2, ...)
    STORE/endpoints/model-00003.parquet     each model alone (α = 0 of its pairs), evaluated once (-gN: later sets)
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
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from . import lease as leases
from ..config import local_path
from ..errors import ConfigError, cause
from ..compute.metrics import COLUMNS

_METRIC_FIELDS = [("eval_set", pa.string()), ("subset", pa.string()), ("n_examples", pa.int64())] + [
    (c, pa.float64()) for c in COLUMNS[1:]]
# `distance` (‖θ_B − θ_A‖₂, the same on every row of a pair) came later: read through this schema, a pair
# stored before it has nulls there.
CURVE_SCHEMA = pa.schema([("model_a", pa.string()), ("model_b", pa.string()), ("alpha", pa.float64()),
                          *_METRIC_FIELDS, ("distance", pa.float64())])
ENDPOINT_SCHEMA = pa.schema([("model", pa.string()), *_METRIC_FIELDS])
# A plane's rows: its three models, each point's place (x, y: true distances; s, t: the mix; vertex: "A"/"B"/"C"
# at a model, "" on the grid), then the metrics.
PLANE_SCHEMA = pa.schema([("model_a", pa.string()), ("model_b", pa.string()), ("model_c", pa.string()),
                          *[(c, pa.float64()) for c in ("x", "y", "s", "t")], ("vertex", pa.string()),
                          *_METRIC_FIELDS])
_EXAMPLE_FIELDS = [("eval_set", pa.string()), ("example", pa.int32()), ("loss", pa.float32()),
                   ("correct", pa.float32())]
PAIR_EXAMPLES_SCHEMA = pa.schema([("model_a", pa.string()), ("model_b", pa.string()), ("alpha", pa.float64()),
                                  *_EXAMPLE_FIELDS])
ENDPOINT_EXAMPLES_SCHEMA = pa.schema([("model", pa.string()), *_EXAMPLE_FIELDS])
_PAIR = re.compile(r"pair-(\d+)-(\d+)(?:-g(\d+))?\.parquet$")
_MODEL = re.compile(r"model-(\d+)(?:-g(\d+))?\.parquet$")
# Settings every stored value shares; the models and eval sets are identified one by one (Registry).
SETTINGS_KEYS = ("alphas", "refine", "per_example", "dtype", "max_length", "tokenizer", "format")

# (eval set name, its subset names) in the order Metrics rows come in.
SetSubsets = list[tuple[str, list[str]]]


@dataclass
class Registry:
    """What a store holds, component by component, in the order each was first added: models (name, ref, labels,
    weights; a model's store index is its position) and eval sets (spec, and the group, i.e. the run that added
    them: their values go to files of that group). Grows, never reorders: a model left out of a later config
    keeps its index and its data."""
    models: list[dict]
    eval_sets: list[dict]

    def index(self, name: str) -> int:
        return next(k for k, m in enumerate(self.models) if m["name"] == name)

    def group(self, eval_set: str) -> int:
        return next(e["group"] for e in self.eval_sets if e["name"] == eval_set)

    @staticmethod
    def merge(url: str, old: dict | None, now: dict, has_data: bool) -> Registry:
        """The registry after adding `now` (this run's settings, models, eval sets) to the store's `old` run.json;
        a conflict is one line naming it. A store written before registries existed reads as group 0 of its
        configuration, its models in config order."""
        if old is None:
            if has_data:  # its results cannot be told apart from another configuration's
                raise ConfigError(f"store {url!r} holds results but no run.json (what identifies them); restore it "
                                  "or use a new store path")
            return Registry([*now["models"]], [{**e, "group": 0} for e in now["eval_sets"]])
        reg = old.get("registry") or {
            "models": [{**m, "weights": old.get("weights", {}).get(m["name"])} for m in old["fingerprint"]["models"]],
            "eval_sets": [{**e, "group": 0} for e in old["fingerprint"]["eval_sets"]]}
        before = {k: v for k, v in old["fingerprint"].items() if k in SETTINGS_KEYS}
        # Paths a store written before configs resolved them recorded as given: read from here, as then.
        if "tokenizer" in before:
            before["tokenizer"] = local_path(before["tokenizer"], Path.cwd())
        after = {k: v for k, v in now["fingerprint"].items() if k in SETTINGS_KEYS}
        if before != after:
            key = next(k for k in [*after, *before] if before.get(k) != after.get(k))
            raise ConfigError(f"store {url!r} holds a run with a different configuration ({key} differ); "
                              "use a new store path or the original configuration")
        models = [dict(m) for m in reg["models"]]
        stored = {m["name"]: m for m in models}
        for m in now["models"]:
            was = stored.get(m["name"])
            if was is None:
                models.append(m)
            elif was.get("weights") not in (None, m["weights"]):
                raise ConfigError(f"store {url!r}: model {m['name']!r} changed since the store was written (weights "
                                  f"{was['weights']} then, {m['weights']} now); restore it or use a new store path")
            elif (was.get("labels") or None) != (m.get("labels") or None):
                raise ConfigError(f"store {url!r}: model {m['name']!r} is stored with labels {was.get('labels')}, "
                                  f"configured with {m.get('labels')}; one name, one model")
            else:
                was.update(m)  # same weights: a new ref (a moved folder) or a first-recorded pin
        sets = [{**e, "path": local_path(e["path"], Path.cwd(), "data")} if "path" in e else dict(e)
                for e in reg["eval_sets"]]
        known = {e["name"]: e for e in sets}
        group = max((e["group"] for e in sets), default=-1) + 1 if has_data else 0
        for e in now["eval_sets"]:
            was = known.get(e["name"])
            if was is None:
                if after.get("refine"):
                    raise ConfigError(f"store {url!r}: eval set {e['name']!r} is new, and adaptive α (refine) places "
                                      "each pair's points by the first sets: add sets to a store without refine")
                sets.append({**e, "group": group})
                continue
            differ = next((k for k in sorted({*e, *was} - {"group"}) if e.get(k) != was.get(k)), None)
            if differ is not None:
                raise ConfigError(f"store {url!r}: eval set {e['name']!r} differs from the stored one ({differ}: "
                                  f"{was.get(differ)!r} stored, {e.get(differ)!r} now); give it another name")
        missing = [e["name"] for e in sets if e["name"] not in {x["name"] for x in now["eval_sets"]}]
        if missing:
            raise ConfigError(f"store {url!r}: eval set {missing[0]!r} is stored but not in the configuration; a "
                              "store's eval sets can be added to, not removed (use a new store path)")
        return Registry(models, sets)


class Store:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = isinstance(self.fs, LocalFileSystem)
        # One spelling per store (`run1`, `./run1/`): the lease is per path.
        self.root = os.path.abspath(self.root) if self.local else self.root.rstrip("/")
        self.lease: leases.Lease | None = None
        self._examples: dict[str, list[str]] = {}  # per-example folder -> its files, listed on first read

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url_of(self, *parts: str) -> str:
        """A file of the store as a user writes it: a local path, or s3://bucket/prefix/..."""
        return self.path(*parts) if self.local else "/".join([self.url.rstrip("/"), *parts])

    # -- opening -------------------------------------------------------------------------------
    def open(self, fingerprint: dict, models: list[dict] = (), eval_sets: list[dict] = (),
             lease_timeout: float = 120.0) -> Registry:
        """Take the store's lease, then create it or reopen it for this configuration: the shared settings must
        match, a model already stored must have the same weights, an eval set already stored the same selection;
        new models and eval sets are added (only their work is then left). `models`: {name, ref, labels,
        weights} per model; `eval_sets`: each set's spec. Returns the store's registry after the merge."""
        shared = leases.held(self.path("_lease.json"))
        try:
            self.lease = leases.acquire(self.fs, self.path("_lease.json"), self.url, lease_timeout, self.local)
        except ConfigError:
            raise
        except Exception as e:  # the lease is the store's first write: an unwritable store ends here
            raise self._unwritable(e) from None
        try:
            return self._merge(fingerprint, models, eval_sets)
        except BaseException:  # refused: the store is free again for whoever fixes the configuration
            if not shared:
                self.close()
            raise

    def _merge(self, fingerprint: dict, models: list[dict], eval_sets: list[dict]) -> Registry:
        run = self.path("run.json")
        try:
            old = json.loads(self.fs.cat_file(run)) if self.fs.exists(run) else None
        except Exception as e:
            raise ConfigError(f"store {self.url!r}: cannot read ({cause(e)})") from None
        now = json.loads(json.dumps({"fingerprint": fingerprint, "models": list(models), "eval_sets": list(eval_sets)}))
        registry = Registry.merge(self.url, old, now, has_data=bool(self.done_pairs(None) or self.done_endpoints(None)))
        new = {"fingerprint": now["fingerprint"], "weights": {m["name"]: m["weights"] for m in registry.models},
               "registry": {"models": registry.models, "eval_sets": registry.eval_sets}}
        try:
            self.cleanup()
            if old != new:
                self.put("run.json", json.dumps(new, indent=2, sort_keys=True).encode())
        except Exception as e:
            raise self._unwritable(e) from None
        return registry

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
    def check_writable(self, advice: str = "") -> None:
        """One line now, rather than a traceback after the work, when nothing can be written here."""
        probe = self.path(f".probe-{uuid.uuid4().hex}")
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except Exception as e:
            raise self._unwritable(e, advice) from None

    def _unwritable(self, e: Exception, advice: str = "") -> ConfigError:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else cause(e)
        return ConfigError(f"store {self.url!r}: not writable ({reason}){advice}")

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
    def pair_file(i: int, j: int, examples: bool = False, group: int = 0) -> str:
        return f"{'examples/' if examples else ''}curves/pair-{i:05d}-{j:05d}{f'-g{group}' if group else ''}.parquet"

    @staticmethod
    def endpoint_file(i: int, examples: bool = False, group: int = 0) -> str:
        return f"{'examples/' if examples else ''}endpoints/model-{i:05d}{f'-g{group}' if group else ''}.parquet"

    @staticmethod
    def plane_file(i: int, j: int, k: int, grid: int, margin: float) -> str:
        """Store indices in the plane's order (i is its origin); the folder names the grid, so another grid is
        another set of files."""
        return f"planes/n{grid}_m{margin:g}/plane-{i:05d}-{j:05d}-{k:05d}.parquet"

    def has(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def planes(self):
        """Every stored plane's points as one pyarrow dataset (columns: PLANE_SCHEMA)."""
        return self._dataset("planes", PLANE_SCHEMA)

    def write_pair(self, i: int, j: int, table: pa.Table, examples: bool = False, group: int = 0) -> None:
        self.put_table(self.pair_file(i, j, examples, group), table)

    def write_endpoint(self, i: int, table: pa.Table, examples: bool = False, group: int = 0) -> None:
        self.put_table(self.endpoint_file(i, examples, group), table)

    # -- reading -------------------------------------------------------------------------------
    def _indices(self, sub: str, pattern: re.Pattern, group: int | None) -> list[tuple[int, ...]]:
        """The store indices of the files under `sub` of eval-set group `group` (None: of any group)."""
        d = self.path(sub)
        if not self.fs.exists(d):
            return []
        found = [pattern.search(p) for p in self.fs.ls(d, detail=False)]
        return [tuple(int(g) for g in m.groups()[:-1]) for m in found
                if m and (group is None or int(m.groups()[-1] or 0) == group)]

    def done_pairs(self, group: int | None = 0) -> set[tuple[int, int]]:
        """Pairs (store indices) stored for the eval sets of `group` (0: the store's first sets; None: any)."""
        return set(self._indices("curves", _PAIR, group))

    def read(self, rel: str) -> pa.Table:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f)

    def read_endpoint(self, i: int, group: int = 0) -> pa.Table:
        return self.read(self.endpoint_file(i, group=group))

    def read_examples(self, i: int, j: int | None = None) -> pa.Table:
        """Per-example values of a pair (or, j None, of model i alone), every eval-set group's file together. The
        folder is listed once per Store: read examples from a Store opened after the sweep that wrote them."""
        folder, name = (self.pair_file(i, j, True) if j is not None else self.endpoint_file(i, True)).rsplit("/", 1)
        if folder not in self._examples:  # one listing per Store, not one per pair: the bootstrap reads them all
            d = self.path(folder)
            self._examples[folder] = sorted(self.fs.ls(d, detail=False)) if self.fs.exists(d) else []
        mine = re.compile(re.escape(name[:-len(".parquet")]) + r"(-g\d+)?\.parquet$")
        files = [f for f in self._examples[folder] if mine.fullmatch(f.rsplit("/", 1)[-1])]
        return pa.concat_tables([self.read(f[len(self.root) + 1:]) for f in files])

    def done_endpoints(self, group: int | None = 0) -> set[int]:
        return {i for (i,) in self._indices("endpoints", _MODEL, group)}

    def curves(self):
        """All stored curves as one pyarrow dataset (temporary files are never matched): `.to_table().to_pandas()`,
        or filtered and projected first (`.to_table(filter=..., columns=...)`), or handed to duckdb."""
        return self._dataset("curves", CURVE_SCHEMA)

    def endpoints(self):
        """Each model alone (α = 0 of its lines, and the endpoints_only sets), as one pyarrow dataset."""
        return self._dataset("endpoints", ENDPOINT_SCHEMA)

    def _dataset(self, sub: str, schema: pa.Schema):
        import pyarrow.dataset as ds

        # A store stopped before its first pair has no curves/ yet: an empty table, not FileNotFoundError.
        where = self.path(sub) if self.fs.exists(self.path(sub)) else []
        return ds.dataset(where, filesystem=self.fs, format="parquet", schema=schema)

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


def plane_table(names: tuple[str, str, str], subsets: SetSubsets, points, metrics: list[list[np.ndarray]]) -> pa.Table:
    """One block of rows per point of the plane (compute/plane.py), each point's metrics per set and subset."""
    parts = []
    for p, m in zip(points, metrics):
        cols = _metric_columns(subsets, m)
        n = len(cols["eval_set"])
        place = {"model_a": [names[0]] * n, "model_b": [names[1]] * n, "model_c": [names[2]] * n,
                 "x": [p.x] * n, "y": [p.y] * n, "s": [p.s] * n, "t": [p.t] * n, "vertex": [p.vertex] * n}
        parts.append(pa.table({**place, **cols}, schema=PLANE_SCHEMA))
    return pa.concat_tables(parts)

