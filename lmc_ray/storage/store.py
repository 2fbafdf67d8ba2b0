"""The Parquet store: results written atomically, merged into large files as they accumulate, local or s3://.

Files:
    STORE/run.json                          what the store holds, per component: each model (name, reference,
                                            pinned weights) and each eval set (its selection) ever added, in the
                                            order added (a model's index), and the settings every value shares;
                                            plus the last run's configuration ("fingerprint")
    STORE/_lease.json                       held by the one sweep writing the store (lmc_ray/storage/lease.py)
    STORE/curves/pair-00003-00017.parquet   one finished pair (store indices, a < b), the eval sets of group 0
    STORE/curves/pair-00003-00017-g1.parquet  the same pair's eval sets added later (group 1, 2, ...)
    STORE/curves/batch-<uuid>.parquet       many pairs of one group, merged from the files above (compaction)
    STORE/endpoints/model-00003.parquet     each model alone (α = 0 of its pairs), evaluated once (-gN: later sets)
    STORE/endpoints/batch-<uuid>.parquet    many models' endpoints, merged likewise
    STORE/examples/{curves,endpoints}/...   per-example loss and correctness, when the sweep keeps them
                                            (per_example: true), written before the file above it
    STORE/_tmp/                             files being written; ignored by readers; what a dead writer
                                            left is removed by the next lease holder
    STORE/_damaged/                         files found unreadable (truncated, emptied), moved here by the next
                                            sweep, which computes their results again

Compaction (why a store holds a thousand models: docs/performance.md, "A store of 1,000 models"): once
LEVEL0_FILES single-result files of one group accumulate, they are merged into one batch file; FAN_IN batch
files of one size class into the next, up to MAX_LEVEL. A batch file's footer names the results it holds (store
indices, the rows of each) and the files it replaces. The merged file is written before its inputs are removed,
and readers skip any file that another present file replaces, so a reader never sees a result twice or not at
all, even after a crash between the two steps. Inputs are removed only at the next merge, so a reader that
listed the folder a moment before still finds the files it listed.

A local file is written under _tmp/ and renamed into place (atomic on POSIX). An S3 object is
written with a single PUT (or a multipart upload completed last), which S3 makes visible whole or not
at all, so no reader of STORE/curves ever sees part of a file.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
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
from ..config import READABLE_FORMATS, STORE_FORMAT, local_path
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
_BATCH = re.compile(r"batch-[0-9a-f]{32}\.parquet$")
_FOLDERS = {"curves": (_PAIR, CURVE_SCHEMA), "endpoints": (_MODEL, ENDPOINT_SCHEMA)}
_META = b"lmc_ray"  # a batch file's footer key: what it holds
LEVEL0_FILES = 64  # single-result files of one group merged into a batch once this many exist
FAN_IN = 16  # batch files of one size class merged into the next class
MAX_LEVEL = 3  # no merges beyond 64·16² results per file (a merge holds its inputs in memory)
log = logging.getLogger("lmc_ray")
# Settings every stored value shares; the models and eval sets are identified one by one (Registry).
# base_weights: an adapter store's every value depends on its base's weights (its ref may move, its weights not).
SETTINGS_KEYS = ("alphas", "refine", "per_example", "dtype", "max_length", "tokenizer", "base_weights", "format")

# (eval set name, its subset names) in the order Metrics rows come in.
SetSubsets = list[tuple[str, list[str]]]


@dataclass
class _File:
    """One results file of curves/ or endpoints/: the results it holds (store indices) and where their rows are."""
    name: str
    group: int
    keys: list[tuple[int, ...]]
    rows: list[int] | None = None  # each key's first row, then the row count; None: one key, the whole file
    replaces: tuple[str, ...] = ()

    @property
    def level(self) -> int:
        n = len(self.keys)
        return 0 if n < LEVEL0_FILES else min(MAX_LEVEL, 1 + int(np.log(n / LEVEL0_FILES) / np.log(FAN_IN) + 1e-9))


@dataclass
class _Folder:
    """What a results folder holds: readable files by name, damaged ones (name -> why), and files another replaces."""
    files: dict[str, _File]
    damaged: dict[str, str]
    superseded: set[str]


@dataclass
class Registry:
    """What a store holds, component by component, in the order each was first added: models (name, ref, labels,
    weights, head: its classes in output order; a model's store index is its position) and eval sets (spec, and
    the group, i.e. the run that added them: their values go to files of that group). Grows, never reorders: a
    model left out of a later config keeps its index and its data."""
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
        if before.get("format") in READABLE_FORMATS and now["fingerprint"].get("format") == STORE_FORMAT:
            before["format"] = STORE_FORMAT  # written by an older version this one reads; run.json then says 3
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
            elif was.get("head") not in (None, m.get("head")):  # the weights' rows are these classes, in this order
                raise ConfigError(f"store {url!r}: model {m['name']!r} changed since the store was written (its "
                                  f"config.json id2label was {was['head']}, is {m['head']}); restore it or use a new "
                                  "store path")
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
        self._folders: dict[str, _Folder] = {}  # the lease holder's view of curves/ and endpoints/, kept current
        self._retired: list[str] = []  # merged into a batch; removed at the next merge (see the module's docstring)

    @property
    def _writing(self) -> bool:
        return self.lease is not None and not self.lease.released and not self.lease.lost

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url_of(self, *parts: str) -> str:
        """A file of the store as a user writes it: a local path, or s3://bucket/prefix/..."""
        return self.path(*parts) if self.local else "/".join([self.url.rstrip("/"), *parts])

    # -- opening -------------------------------------------------------------------------------
    def open(self, fingerprint: dict, models: list[dict] = (), eval_sets: list[dict] = (),
             lease_timeout: float = 120.0, analysis: dict | None = None) -> Registry:
        """Take the store's lease, then create it or reopen it for this configuration: the shared settings must
        match, a model already stored must have the same weights, an eval set already stored the same selection;
        new models and eval sets are added (only their work is then left). `models`: {name, ref, labels,
        weights} per model; `eval_sets`: each set's spec; `analysis`: the last run's defaults for the analysis
        (config `ood`), recorded beside the store's identity, never part of it. Returns the store's registry
        after the merge."""
        shared = leases.held(self.path("_lease.json"))
        try:
            self.lease = leases.acquire(self.fs, self.path("_lease.json"), self.url, lease_timeout, self.local)
        except ConfigError:
            raise
        except Exception as e:  # the lease is the store's first write: an unwritable store ends here
            raise self._unwritable(e) from None
        try:
            return self._merge(fingerprint, models, eval_sets, analysis or {})
        except BaseException:  # refused: the store is free again for whoever fixes the configuration
            if not shared:
                self.close()
            raise

    def _merge(self, fingerprint: dict, models: list[dict], eval_sets: list[dict], analysis: dict) -> Registry:
        run = self.path("run.json")
        try:
            old = json.loads(self.fs.cat_file(run)) if self.fs.exists(run) else None
        except Exception as e:
            raise ConfigError(f"store {self.url!r}: cannot read ({cause(e)})") from None
        now = json.loads(json.dumps({"fingerprint": fingerprint, "models": list(models), "eval_sets": list(eval_sets)}))
        registry = Registry.merge(self.url, old, now, has_data=self.has_results())
        new = {"fingerprint": now["fingerprint"], "weights": {m["name"]: m["weights"] for m in registry.models},
               "registry": {"models": registry.models, "eval_sets": registry.eval_sets},
               **({"analysis": analysis} if analysis else {})}
        try:
            self.cleanup()
            if old != new:
                self.put("run.json", json.dumps(new, indent=2, sort_keys=True).encode())
            self.repair()
        except Exception as e:
            raise self._unwritable(e) from None
        return registry

    def close(self) -> None:
        """Give up the lease; an empty _tmp/ is not left behind."""
        if self._writing:
            self._remove_retired()
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

    def repair(self) -> None:
        """The lease holder's first look at the results: files another replaces (a merge interrupted before it
        removed its inputs) are removed, unreadable files moved to _damaged/ so their results are computed again."""
        for sub in _FOLDERS:
            folder = self._folders[sub] = self._scan(sub)
            for name in sorted(folder.superseded):
                self.fs.rm_file(self.path(sub, name))
            for name, why in sorted(folder.damaged.items()):
                log.warning("store %s: %s/%s is damaged (%s); moved to _damaged/, its results are computed again",
                            self.url, sub, name, why)
                self._set_aside(f"{sub}/{name}")
            folder.superseded, folder.damaged = set(), {}

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
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:  # a full disk: no partial file left, and the error names the file, not its _tmp/ twin
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise OSError(e.errno, e.strerror, final) from None

    def put_table(self, rel: str, table: pa.Table, meta: dict | None = None) -> None:
        if meta is not None:
            table = table.replace_schema_metadata({_META: json.dumps(meta)})
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
        return self._dataset("planes")

    def write_pair(self, i: int, j: int, table: pa.Table, examples: bool = False, group: int = 0) -> None:
        if examples:
            self.put_table(self.pair_file(i, j, True, group), table)
        else:
            self.write_results("curves", group, [((i, j), table)])

    def write_endpoint(self, i: int, table: pa.Table, examples: bool = False, group: int = 0) -> None:
        if examples:
            self.put_table(self.endpoint_file(i, True, group), table)
        else:
            self.write_results("endpoints", group, [((i,), table)])

    def write_results(self, sub: str, group: int, items: list[tuple[tuple[int, ...], pa.Table]]) -> None:
        """Results of one group into `sub` (curves, endpoints): one result as its own file (pair-/model-), several
        as one batch file; then a merge if a size class is full. Only the lease holder writes results."""
        folder = self._folder(sub)
        if len(items) == 1:
            (key, table), = items
            name = (self.pair_file(*key, group=group) if sub == "curves" else self.endpoint_file(*key, group=group))
            self.put_table(name, table)
            f = _File(name.rsplit("/", 1)[1], group, [key])
        else:
            f = self._write_batch(sub, group, [k for k, _ in items], [t for _, t in items])
        folder.files[f.name] = f
        self._compact(sub, group)

    def _write_batch(self, sub: str, group: int, keys: list, tables: list[pa.Table], replaces=()) -> _File:
        rows = np.cumsum([0, *(len(t) for t in tables)]).tolist()
        f = _File(f"batch-{uuid.uuid4().hex}.parquet", group, [tuple(k) for k in keys], rows, tuple(replaces))
        table = pa.concat_tables(tables) if tables else _FOLDERS[sub][1].empty_table()
        self.put_table(f"{sub}/{f.name}", table, {"group": group, "keys": f.keys, "rows": rows,
                                                  "replaces": list(replaces)})
        return f

    def _compact(self, sub: str, group: int) -> None:
        """Merge the smallest full size class of `group`, if one is full; one merge per write, so a merged file is
        removed only after the files it replaced are (a reader then never sees a result twice)."""
        files = [f for f in self._folder(sub).files.values() if f.group == group]
        for level in range(MAX_LEVEL):
            same = [f for f in files if f.level == level]
            if len(same) >= (LEVEL0_FILES if level == 0 else FAN_IN):
                self._rewrite(sub, same)
                return

    def _rewrite(self, sub: str, files: list[_File], drop: set = frozenset()) -> None:
        """Replace `files` (one group) by one batch file holding their results, less those in `drop`."""
        self._remove_retired()
        schema = _FOLDERS[sub][1]
        keys, tables = [], []
        for f in files:
            table = _conform(self.read(f"{sub}/{f.name}"), schema)
            rows = f.rows or [0, len(table)]
            for n, key in enumerate(f.keys):
                if key not in drop:
                    keys.append(key)
                    tables.append(table.slice(rows[n], rows[n + 1] - rows[n]))
        merged = self._write_batch(sub, files[0].group, keys, tables, [f.name for f in files])
        folder = self._folder(sub)
        for f in files:
            del folder.files[f.name]
        folder.files[merged.name] = merged
        self._retired += [f"{sub}/{f.name}" for f in files]

    def _remove_retired(self) -> None:
        for rel in self._retired:
            self.fs.rm_file(self.path(rel))
        self._retired = []

    def forget(self, sub: str, keys: set, group: int) -> None:
        """Results of `group` in `sub` no longer counted as stored (computed again by the sweep): a result alone
        in its file goes with it; a batch is rewritten without them."""
        folder = self._folder(sub)
        for f in [f for f in folder.files.values() if f.group == group and keys & set(f.keys)]:
            if f.rows is None:
                self.fs.rm_file(self.path(sub, f.name))
                del folder.files[f.name]
            else:
                self._rewrite(sub, [f], keys)

    # -- reading -------------------------------------------------------------------------------
    def _scan(self, sub: str) -> _Folder:
        """List `sub` and read what each file holds: from its name (pair-/model- files) or footer (batch files).
        A local file is checked whole (a truncated or emptied one is damaged); an S3 object is whole or absent."""
        pattern, _ = _FOLDERS[sub]
        d = self.path(sub)
        listing = self.fs.ls(d, detail=True) if self.fs.exists(d) else []
        files, damaged = {}, {}
        for entry in listing:
            path = entry["name"]
            name = path.rsplit("/", 1)[-1]
            single, batch = pattern.search(name), _BATCH.fullmatch(name)
            if not (single or batch):
                continue
            try:
                if self.local:
                    _check_whole(path, entry["size"])
                if single:
                    *key, g = single.groups()
                    files[name] = _File(name, int(g or 0), [tuple(int(k) for k in key)])
                else:
                    with self.fs.open(path, "rb") as fh:
                        meta = json.loads(pq.read_metadata(fh).metadata[_META])
                    files[name] = _File(name, meta["group"], [tuple(k) for k in meta["keys"]], meta["rows"],
                                        tuple(meta["replaces"]))
            except Exception as e:  # noqa: BLE001 - whatever makes a file unreadable makes it damaged
                damaged[name] = _damage(e)
        superseded = {r for f in files.values() for r in f.replaces} & (set(files) | set(damaged))
        for name in superseded:
            files.pop(name, None)
            damaged.pop(name, None)
        return _Folder(files, damaged, superseded)

    def _set_aside(self, rel: str) -> None:
        """A damaged file is kept under _damaged/ for a look, out of the readers' way."""
        if self.local:
            os.makedirs(os.path.dirname(self.path("_damaged", rel)), exist_ok=True)
        self.fs.mv(self.path(rel), self.path("_damaged", rel))

    def _folder(self, sub: str) -> _Folder:
        """The lease holder's view (kept as it writes), or for a reader the folder as it is now; a reader refuses a
        damaged file in one line (the next sweep computes its results again)."""
        if self._writing:
            if sub not in self._folders:
                self._folders[sub] = self._scan(sub)
            return self._folders[sub]
        folder = self._scan(sub)
        if folder.damaged:
            name, why = sorted(folder.damaged.items())[0]
            raise ConfigError(f"store {self.url!r}: {sub}/{name} is damaged ({why}); rerun the sweep, which moves it "
                              "to _damaged/ and computes its results again")
        return folder

    def stored(self, sub: str, group: int | None) -> set[tuple[int, ...]]:
        """The results (store indices) in `sub` (curves, endpoints) for the eval sets of `group` (None: any)."""
        return {k for f in self._folder(sub).files.values() if group is None or f.group == group for k in f.keys}

    def has_results(self) -> bool:
        """Whether any results file is here, readable or not: what a store without run.json must not have."""
        return any(self.fs.exists(self.path(sub)) and self.fs.ls(self.path(sub)) for sub in _FOLDERS)

    def done_pairs(self, group: int | None = 0) -> set[tuple[int, int]]:
        """Pairs (store indices) stored for the eval sets of `group` (0: the store's first sets; None: any)."""
        return self.stored("curves", group)

    def read(self, rel: str) -> pa.Table:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f)

    def read_endpoints(self, group: int = 0) -> dict[int, pa.Table]:
        """Each stored model's endpoint rows for the eval sets of `group`, by store index: one read per file."""
        out = {}
        for f in self._folder("endpoints").files.values():
            if f.group == group:
                table = self.read(f"endpoints/{f.name}")
                rows = f.rows or [0, len(table)]
                out.update({k: table.slice(rows[n], rows[n + 1] - rows[n]) for n, (k,) in enumerate(f.keys)})
        return out

    def unexamined(self, sub: str, keys: set, group: int) -> set:
        """Of `keys` (results of `group` in `sub`), those whose per-example file is missing or damaged (moved to
        _damaged/): their results are forgotten, so that the sweep computes both again."""
        folder = f"examples/{sub}"
        d = self.path(folder)
        sizes = {e["name"].rsplit("/", 1)[-1]: e["size"] for e in self.fs.ls(d, detail=True)} if self.fs.exists(d) else {}
        bad = set()
        for key in keys:
            rel = self.pair_file(*key, True, group) if sub == "curves" else self.endpoint_file(*key, True, group)
            name = rel.rsplit("/", 1)[1]
            if name not in sizes:
                bad.add(key)
                continue
            try:
                if self.local:
                    _check_whole(self.path(rel), sizes[name])
            except ValueError as e:
                log.warning("store %s: %s is damaged (%s); moved to _damaged/, its results are computed again",
                            self.url, rel, e)
                self._set_aside(rel)
                bad.add(key)
        return bad

    def read_examples(self, i: int, j: int | None = None) -> pa.Table:
        """Per-example values of a pair (or, j None, of model i alone), every eval-set group's file together. The
        folder is listed once per Store: read examples from a Store opened after the sweep that wrote them."""
        folder, name = (self.pair_file(i, j, True) if j is not None else self.endpoint_file(i, True)).rsplit("/", 1)
        if folder not in self._examples:  # one listing per Store, not one per pair: the bootstrap reads them all
            d = self.path(folder)
            self._examples[folder] = sorted(self.fs.ls(d, detail=False)) if self.fs.exists(d) else []
        mine = re.compile(re.escape(name[:-len(".parquet")]) + r"(-g\d+)?\.parquet$")
        files = [f for f in self._examples[folder] if mine.fullmatch(f.rsplit("/", 1)[-1])]
        tables = []
        for f in files:
            try:
                tables.append(self.read(f[len(self.root) + 1:]))
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"store {self.url!r}: {f[len(self.root) + 1:]} is damaged (unreadable: {cause(e)}); "
                                  "rerun the sweep, which computes it again") from None
        return pa.concat_tables(tables)

    def done_endpoints(self, group: int | None = 0) -> set[int]:
        return {i for (i,) in self.stored("endpoints", group)}

    def curves(self):
        """All stored curves as one pyarrow dataset (temporary and replaced files are never matched):
        `.to_table().to_pandas()`, or filtered and projected first (`.to_table(filter=..., columns=...)`), or
        handed to duckdb."""
        return self._dataset("curves")

    def endpoints(self):
        """Each model alone (α = 0 of its lines, and the endpoints_only sets), as one pyarrow dataset."""
        return self._dataset("endpoints")

    def _dataset(self, sub: str):
        import pyarrow.dataset as ds

        names = sorted(self._folder(sub).files) if sub in _FOLDERS else None
        if names is None:  # planes/: one file each, never merged
            where = self.path(sub) if self.fs.exists(self.path(sub)) else []
        else:  # a store stopped before its first pair has no curves/ yet: an empty table, not FileNotFoundError
            where = [self.path(sub, n) for n in names]
        schema = _FOLDERS[sub][1] if sub in _FOLDERS else PLANE_SCHEMA
        return ds.dataset(where, filesystem=self.fs, format="parquet", schema=schema)

    def meta(self) -> dict:
        """run.json: the settings that decide the values (fingerprint), each model's pinned weights, and the last
        run's defaults for the analysis (`analysis`, when its config set any)."""
        try:
            return json.loads(self.fs.cat_file(self.path("run.json")))
        except FileNotFoundError:
            raise ConfigError(f"store {self.url!r}: no run.json (not an lmc-ray store, or nothing written yet)") from None


def _check_whole(path: str, size: int) -> None:
    """A Parquet file begins and ends with its magic bytes; a truncated or emptied one does not."""
    if size < 12:
        raise ValueError("empty" if size == 0 else f"{size} bytes")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-4, os.SEEK_END)
        if head != b"PAR1" or f.read(4) != b"PAR1":
            raise ValueError("truncated")


def _damage(e: Exception) -> str:
    return str(e) if isinstance(e, ValueError) and str(e) in ("empty", "truncated") or str(e).endswith(" bytes") \
        else f"unreadable: {cause(e)}"


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table read from an older file, in today's columns: those it lacks as nulls (e.g. `distance`)."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


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

