"""Typed sweep configuration: YAML file + flag overrides, validated in one place.

The config classes are pydantic dataclasses: each field's type (with its literal choices and bounds) is checked
when the object is built, the docstring under a field is its description (in the JSON schema and in --help), and
a rejected value becomes one line naming the key, the value and what is allowed. Everything that can be checked
without touching a model or a data file is checked here, so a typo fails in milliseconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from .errors import ConfigError, first_line
from .compute import sources
from .compute.metrics import COLUMNS


STORE_FORMAT = 3  # bumped when stored columns or files change: a store another version cannot read is refused
READABLE_FORMATS = (2, 3)  # 3 added merged batch files to 2's one file per result: a 2 store is read and grown
METRICS = COLUMNS[2:]  # the scores an eval set may report per model

# strict: YAML's "10" stays a string and its `true` is no 1; forbid: a typo'd key is refused, not ignored.
TYPED = ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]


@dataclass(config=TYPED)
class ModelSpec:
    ref: str
    """Local directory, hub id (org/name[@revision]) or s3://bucket/prefix."""
    name: str = ""
    """How the model is named in the store; default: its ref."""
    labels: Annotated[list[str], Field(min_length=2)] | None = None
    """The checkpoint's class names in id order, for checkpoints saved with generic LABEL_i names (label orders are
    matched by name, so they must be known)."""
    step: str | None = None
    """The training step this checkpoint was saved at, for populations swept at several steps (set by `steps:`)."""

    def __post_init__(self):
        self.ref = same_ref(self.ref)
        self.name = self.name or self.ref


def same_ref(ref: str) -> str:
    """One spelling per model: `m0`, `m0/` and `./m0` name the same directory (and `s3://b/m0/` the same prefix)."""
    scheme, sep, rest = ref.rpartition("://")
    return f"{scheme}{sep}{rest.rstrip('/')}" if sep else os.path.normpath(ref)


@dataclass(config=TYPED)
class EvalSetSpec:
    name: str
    """How the set is named in the store and the report."""
    path: str
    """Local file (jsonl/csv/tsv/parquet) or a hub dataset id."""
    text: list[str]
    """The text field, or two for sentence pairs."""
    label: str
    """The field holding each example's label (a name, or a class id)."""
    subsets: list[str | list[str]] = field(default_factory=list)
    """Each entry is a field or a list of fields; scores are also reported per value (combination)."""
    label_map: dict[Any, str | list[str]] | None = None
    """Raw label value -> model label name, or a list of names whose logits are pooled by max (how a 3-way NLI model
    is scored on 2-way HANS)."""
    max_examples: Positive | None = 512
    """The first K rows, as the paper; null = all."""
    split: str = "validation"
    """Hub datasets only."""
    subset_config: str | None = None
    """Hub dataset configuration name (e.g. "mnli")."""
    revision: str | None = None
    """Hub datasets only: a branch, tag or commit. datasets 4+ runs no loading scripts, so a script dataset (HANS) is
    read from its parquet conversion, revision "refs/convert/parquet"."""
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    """Hub datasets only: files of the repository to read (as datasets.load_dataset's data_files), e.g. a parquet
    conversion's "plain_text/validation/*.parquet"."""
    format: str | None = None
    """Override of the file-extension guess."""
    role: Literal["in_domain", "diagnostic"] = "in_domain"
    """How the cluster report uses the set."""
    columns: list[str] | None = None
    """Names for a header-less csv/tsv (e.g. CoLA's raw files)."""
    balance_by: str | None = None
    """Take the first max_examples rows round-robin over this field's values, so a file sorted by subcase (HANS:
    1,000 rows of each of 30) still gives every subcase its share."""
    filter: dict[str, str | list[str]] | None = None
    """Keep only the rows whose field has this value (or one of these values), before any other selection: the
    paper's HANS set is {heuristic: lexical_overlap, label: non-entailment}."""
    shuffle_seed: int | None = None
    """Then permute the rows as datasets.Dataset.shuffle(seed=...) does (the same rows come out in the same order)
    and take the first max_examples: the paper's HANS selection is shuffle(seed=42), first 512."""
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    """Reported per model: accuracy, f1, mcc."""
    endpoints_only: bool = False
    """Evaluated once per model, never along the lines: whole diagnostic sets (HANS's 30,000 rows) for the
    per-cluster scores, at N evaluations instead of N(N-1)/2 x 8."""

    def subset_fields(self) -> list[list[str]]:
        return [[s] if isinstance(s, str) else list(s) for s in self.subsets]


@dataclass(config=TYPED)
class PlanesSpec:
    triples: list[Annotated[list[str], Field(min_length=3, max_length=3)]]
    """Each three model names [A, B, C]: the plane θ_A + s(θ_B − θ_A) + t(θ_C − θ_A) through them."""
    grid: Annotated[int, Field(ge=2)] = 11
    """Points per axis of the grid (true distances, Gram–Schmidt axes, as the paper draws its planes)."""
    margin: NonNegativeNumber = 0.2
    """How far the grid reaches beyond the triangle, as a fraction of its width and height."""


@dataclass(config=TYPED)
class SweepConfig:
    models: list[ModelSpec]
    """The population: model references (strings) or mappings with ref, name, labels, steps; all one architecture."""
    eval_sets: list[EvalSetSpec]
    """The sets each model is scored on; the first is on every line and decides the barriers by default."""
    store: str
    """Output store: a local path or s3://bucket/prefix."""
    alphas: list[float] = field(default_factory=lambda: grid(10))
    """Points on each line: a count of evenly spaced points with both models included (10, the paper's; 3 to
    1000), or a list of α in [0, 1] such as [0, 0.5, 1]."""
    pairs: str | dict[str, Any] = "all"
    """Which pairs get a line: all (the paper's N(N−1)/2), {anchors: [model names]} (every model against each
    anchor), or {file: PATH} (two model names a line). `analyse` needs all for basins."""
    across_steps: bool = False
    """With models at several training steps (`steps:`), also the pairs between steps (default: within each)."""
    planes: PlanesSpec | None = None
    """Planes through three models, evaluated on the line sets after the pairs (STORE/planes/, contour plots in the
    report); null = none."""
    refine: NonNegative = 0
    """Adaptive α: refinement rounds, each evaluating the two midpoints either side of the curve's highest point
    above its endpoint chord (first eval set's loss). 0 = the paper's fixed grid."""
    per_example: bool = False
    """Keep every example's loss and correctness at every α (STORE/examples/), so `analyse` can put a
    bootstrap confidence interval on each barrier."""
    dtype: Literal["auto", "float32", "bfloat16", "float16", "tfloat32"] = "auto"
    """auto: bfloat16 where the sweep runs on GPUs, float32 on CPUs (core.GPU_DTYPE says why); made concrete before
    the store is opened, so a store records the precision its values were computed in. tfloat32: fp32 weights with
    TF32 matmuls, GPUs only."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where each actor computes; auto = its node's GPU if it has one, else its CPUs."""
    batch_tokens: Literal["auto"] | Positive = "auto"
    """Tokens per batch: padded tokens (dynamic padding, length-sorted), or with packing the longest stream; auto:
    core.BATCH_TOKENS for the device, packed core.PACKED_TOKENS."""
    max_batch_size: Positive = 256
    """Most examples in one padded batch, whatever the token budget allows."""
    packing: Literal["auto"] | bool = "auto"
    """Padding-free evaluation (lmc_ray/compute/packed.py): auto = on GPUs for BERT-family encoders; true fails on others.
    Changes no value beyond float rounding, so stores resume across it."""
    max_length: Literal["auto"] | Positive = "auto"
    """Tokens kept per example (truncation only; never padded to); auto = 512 or the models' positions if fewer.
    More than the models' positions is refused."""
    actors: Literal["auto"] | Positive = "auto"
    """Number of actors; auto = as many as the population and the cluster's largest size allow (what the autoscaler
    may add counts, not only what runs now): one per gpus_per_actor GPUs, or per cpus_per_actor cores."""
    gpus_per_actor: Literal["auto"] | NonNegativeNumber = "auto"
    """GPUs each actor asks Ray for: 1, or 1/k to share a GPU among k actors; auto = 1 when the sweep runs on GPUs
    (device cuda, or auto on a cluster that has or can add GPUs), 1/k when there are more actors than GPUs, else 0.
    Asking is what makes an autoscaler start GPU workers."""
    cpus_per_actor: Positive = 2
    """Threads per actor on CPUs (docs/performance.md measures 1 and 2)."""
    resource_timeout: PositiveNumber = 900.0
    """Seconds to wait for the actors' resources (an autoscaler starting nodes) before giving up in one line."""
    max_in_flight: Positive = 2
    """Pair tasks queued per actor."""
    max_retries: NonNegative = 3
    """Actor restarts / task retries before a model is declared broken."""
    lease_timeout: PositiveNumber = 120.0
    """Seconds without a heartbeat after which another sweep may take over an S3 store's lease (lmc_ray/storage/lease.py)."""
    cache_dir: str = "~/.cache/lmc_ray"
    """Where models read from S3, and converted checkpoints, are cached; hub files go to huggingface_hub's own cache
    (HF_HUB_CACHE, else HF_HOME/hub), shared with the user's other tools."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for s3:// paths."""
    tokenizer: str | None = None
    """Model reference to take the tokenizer from; default: the first model."""

    def fingerprint(self) -> dict:
        """The settings that decide the stored values; a store refuses a run whose fingerprint differs."""
        return {
            "models": [dataclasses.asdict(m) for m in self.models],
            # Eval-set keys added after stores existed enter only when set, so those stores still resume.
            "eval_sets": [{k: v for k, v in dataclasses.asdict(e).items() if k not in _LATER or v != _LATER[k]}
                          for e in self.eval_sets],
            "alphas": self.alphas,
            # Only when used, so stores written before adaptive α existed stay resumable.
            **({"refine": self.refine} if self.refine else {}),
            **({"per_example": True} if self.per_example else {}),
            **({"pairs": self.pairs} if self.pairs != "all" else {}),
            "dtype": self.dtype,
            "max_length": self.max_length,
            "tokenizer": self.tokenizer,
            "format": STORE_FORMAT,
        }


_LATER = {"filter": None, "shuffle_seed": None, "revision": None, "data_files": None, "endpoints_only": False}


# Each point is a forward pass of every pair over the eval sets: 1,000 is 100× the paper's grid.
MAX_ALPHAS = 1000


def grid(n: int) -> list[float]:
    """n evenly spaced points on [0, 1], endpoints included (the paper's grid for n = 10)."""
    return [i / (n - 1) for i in range(n)]


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand(ref: str) -> list[str]:
    """`org/bert_{0..99}` -> 100 refs; several ranges multiply out."""
    m = _RANGE.search(ref)
    if not m:
        return [ref]
    lo, hi = int(m.group(1)), int(m.group(2))
    width = len(m.group(1)) if m.group(1).startswith("0") and len(m.group(1)) > 1 else 0
    out = []
    for i in range(lo, hi + 1):
        out += expand(ref[: m.start()] + str(i).zfill(width) + ref[m.end():])
    return out


def _at_step(ref: str, step: int) -> str:
    """Where the checkpoint saved at `step` of the model at `ref` lives: on the hub, a commit of its history
    (sources.py finds it); elsewhere the folder REF-stepS beside REF (finetune's save_steps)."""
    return f"{ref}@step:{step}" if sources.kind(ref) == "hub" else f"{ref}-step{step}"


def _models(raw) -> list[ModelSpec]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("config: 'models' must be a non-empty list")
    out = []
    for item in raw:
        if isinstance(item, str):
            out += [ModelSpec(r) for r in expand(item)]
        elif isinstance(item, dict) and "ref" in item:
            where = f"config: model {item['ref']!r}"
            unknown = sorted(set(item) - {"ref", "name", "labels", "steps"})
            if unknown:  # `step` is set by expanding `steps`, not written
                raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: labels, name, ref, steps)")
            steps = item.get("steps")
            if steps is not None and not (isinstance(steps, list) and steps and all(
                    s == "final" or (isinstance(s, int) and not isinstance(s, bool) and s > 0) for s in steps)):
                raise ConfigError(f"{where}: steps must be a list of positive step numbers and/or final, got {steps!r}")
            # every other key checked before expanding
            spec = build(ModelSpec, {k: v for k, v in item.items() if k != "steps"}, where)
            refs = expand(spec.ref)
            names = expand(item["name"]) if item.get("name") else [same_ref(r) for r in refs]
            if len(names) != len(refs):
                raise ConfigError(f"{where}: 'name' expands to {len(names)} names for {len(refs)} refs")
            if steps and sources.kind(refs[0]) == "hub" and "@" in refs[0]:
                raise ConfigError(f"{where}: steps pick commits on main; give the repository without @revision")
            for r, n in zip(refs, names):
                out += [ModelSpec(r if s == "final" else _at_step(r, s), f"{n}@{s}", spec.labels, str(s))
                        for s in steps] if steps else [ModelSpec(r, n if item.get("name") else "", spec.labels)]
        else:
            raise ConfigError(f"config: model entry {item!r} must be a string or a mapping with 'ref'")
    return out


_BOUNDS = {("ge", 1): "a positive", ("ge", 0): "a non-negative", ("gt", 0): "a positive"}


def _describe(hint) -> str:
    """A declared type in words, as the one-line error says what is allowed."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        inner, bounds = _describe(args[0]), [m for info in args[1:] for m in getattr(info, "metadata", [info])]
        for b in bounds:
            if getattr(b, "min_length", None):
                return f"{inner} of at least {b.min_length}"
            for (kind, at), words in _BOUNDS.items():
                if getattr(b, kind, None) == at:
                    return f"{words} {inner.split(' ', 1)[1]}"
        return inner
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of ({_describe(args[0])})"
    if origin is dict:
        return f"a mapping to ({_describe(args[1])})" if args and args[1] is not Any else "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def build(cls, raw: dict, where: str):
    """cls(**raw), with pydantic's verdict on the first bad key as one line: the key, the value, what is allowed."""
    try:
        return cls(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = err["loc"][0] if err["loc"] else None
        if err["type"] == "unexpected_keyword_argument":
            known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            problem = f"unknown key {key!r} (known: {known})"
        elif err["type"] in ("missing", "missing_argument"):
            problem = f"missing required key {key!r}"
        elif key in raw:
            allowed = _describe(typing.get_type_hints(cls, include_extras=True)[key])
            problem = f"{key} must be {allowed}, got {raw[key]!r}"
            inner = _culprit(raw[key], err["loc"][1:])
            if inner:
                problem = f"{key}{inner[0]} is {inner[1]!r}: {key} must be {allowed}"
        else:
            problem = first_line(e)
        raise ConfigError(f"{where}: {problem}") from None


def _culprit(value, loc) -> tuple[str, Any] | None:
    """The innermost entry of a list or mapping that pydantic's error location points into, as (path, value):
    `label_map['a']` and its 3, rather than the whole mapping. None when the value itself is the culprit."""
    path = ""
    for part in loc:
        if isinstance(value, dict) and part in value:
            value, path = value[part], f"{path}[{part!r}]"
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value, path = value[part], f"{path}[{part}]"
        else:
            break
    return (path, value) if path else None


def eval_set(e, where) -> EvalSetSpec:
    if not isinstance(e, dict):
        raise ConfigError(f"config: eval set {where!r} must be a mapping")
    e = dict(e)
    if isinstance(e.get("text"), str):
        e["text"] = [e["text"]]
    return build(EvalSetSpec, e, f"config: eval set {e.get('name', where)!r}")


# A data file's format by its extension (EvalSetSpec.format says it for other names).
FILE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def local_path(value, base: Path, what: Literal["model", "data", "folder"] = "model"):
    """`value` resolved against `base` when it names a local path: one that exists there, or one that cannot be
    anything else (a model ref that is no hub id, a data file with an extension, a folder). Hub ids, URLs, ~
    and absolute paths are left as they are, so a missing local folder is named in full, not sought on the hub."""
    if not isinstance(value, str) or "://" in value or value.startswith("~") or os.path.isabs(value):
        return value
    first = _RANGE.sub(lambda m: m.group(1), value)  # a range, m{0..9}, is local or not as its first member is
    if what == "model":
        remote = sources.hub_id(first)
    elif what == "data":
        remote = os.path.splitext(first)[1].lower() not in FILE_FORMATS
    else:
        remote = False
    return value if remote and not (base / first).exists() else os.path.normpath(base / value)


def resolve_paths(raw: dict, base: Path) -> dict:
    """The config's local paths (models, tokenizer, eval-set files, store, cache_dir) made absolute against
    `base`: the folder of the YAML file they were written in (the working directory for flags, API dicts and
    shipped configurations), so run.json records paths every later command finds wherever it runs. A model
    keeps the name it was written with."""
    raw = dict(raw)
    if isinstance(raw.get("models"), list):
        raw["models"] = [_resolve_model(m, base) for m in raw["models"]]
    if isinstance(raw.get("eval_sets"), list):
        raw["eval_sets"] = [{**e, "path": local_path(e["path"], base, "data")}
                            if isinstance(e, dict) and "path" in e else e for e in raw["eval_sets"]]
    for key in ("tokenizer", "store", "cache_dir"):
        if key in raw:
            raw[key] = local_path(raw[key], base, "model" if key == "tokenizer" else "folder")
    return raw


def _resolve_model(item, base: Path):
    ref = item if isinstance(item, str) else item.get("ref") if isinstance(item, dict) else None
    at = local_path(ref, base)
    if at == ref:
        return item
    return {"ref": at, "name": same_ref(ref)} if isinstance(item, str) else {"name": same_ref(ref), **item, "ref": at}


def from_dict(raw: dict) -> SweepConfig:
    if not isinstance(raw, dict):
        raise ConfigError("config: top level must be a mapping")
    raw = resolve_paths(raw, Path.cwd())
    for key in ("models", "eval_sets", "store"):
        if key not in raw:
            raise ConfigError(f"config: missing required key {key!r}")
    raw["models"] = _models(raw["models"])
    if not isinstance(raw["eval_sets"], list) or not raw["eval_sets"]:
        raise ConfigError("config: 'eval_sets' must be a non-empty list")
    raw["eval_sets"] = [eval_set(e, i) for i, e in enumerate(raw["eval_sets"])]
    alphas = raw.get("alphas")
    if isinstance(alphas, int) and not isinstance(alphas, bool):
        if alphas < 3:
            raise ConfigError(f"config: alphas = {alphas}: a barrier needs at least 3 points (the two models and "
                              "one between)")
        if alphas > MAX_ALPHAS:  # before the grid is built: 10^8 points took 5 GB here
            raise ConfigError(f"config: alphas = {alphas}: at most {MAX_ALPHAS} points on a line (the paper uses 10; "
                              "refine adds points where the barrier is)")
        raw["alphas"] = grid(alphas)
    elif alphas is not None and not (isinstance(alphas, list) and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in alphas)):
        raise ConfigError(f"config: alphas must be a number of grid points or a list of numbers, got {alphas!r}")
    if isinstance(raw.get("planes"), dict):
        raw["planes"] = build(PlanesSpec, raw["planes"], "config: planes")
    cfg = build(SweepConfig, raw, "config")
    validate(cfg)
    return cfg


def validate(cfg: SweepConfig) -> None:
    """What no single field's type says: relations between fields and entries."""
    for what in ("name", "ref"):
        seen = {}
        for m in cfg.models:
            key = getattr(m, what)
            if key in seen:
                also = f" (as {seen[key].name!r} and {m.name!r})" if what == "ref" else ""
                raise ConfigError(f"config: model {what} {key!r} appears twice{also}")
            seen[key] = m
    if len(cfg.models) < 2:
        raise ConfigError("config: a sweep needs at least 2 models")
    if cfg.pairs != "all":
        if not isinstance(cfg.pairs, dict) or len(cfg.pairs) != 1 or not {"anchors", "file"} & set(cfg.pairs):
            raise ConfigError(f"config: pairs must be 'all', {{anchors: [names]}} or {{file: PATH}}, got {cfg.pairs!r}")
        anchors = cfg.pairs.get("anchors", [])
        unknown = [a for a in anchors if a not in [m.name for m in cfg.models]] if isinstance(anchors, list) else [anchors]
        if unknown or ("anchors" in cfg.pairs and not anchors):
            raise ConfigError(f"config: pairs anchors: {unknown[0] if unknown else None!r} is not a model name")
    names = [m.name for m in cfg.models]
    for triple in cfg.planes.triples if cfg.planes else []:
        unknown = [n for n in triple if n not in names]
        if unknown or len(set(triple)) < 3:
            raise ConfigError(f"config: planes: {triple!r}: " + (f"{unknown[0]!r} is not a model name" if unknown
                                                                  else "three different models make a plane"))
    share = cfg.gpus_per_actor
    if share not in ("auto", 0) and (share > 1 or abs(share * round(1 / share) - 1) > 1e-3):
        raise ConfigError(f"config: gpus_per_actor {share:g}: an actor computes on one GPU, alone (1) or shared by k "
                          "actors (1/k: 0.5, 0.3333, 0.25, ...)")
    alphas = [float(a) for a in cfg.alphas]
    for a in alphas:
        if not (0.0 <= a <= 1.0):
            raise ConfigError(f"config: alpha {a} is outside [0, 1]")
    if len(alphas) < 3 or not any(0.0 < a < 1.0 for a in alphas):
        raise ConfigError(f"config: alphas {cfg.alphas!r}: a barrier needs at least 3 points, one of them between the "
                          "two models (e.g. [0, 0.5, 1])")
    if len(set(alphas)) != len(alphas):
        raise ConfigError("config: alphas contain a duplicate value")
    if len(alphas) > MAX_ALPHAS:
        raise ConfigError(f"config: alphas: {len(alphas)} points; at most {MAX_ALPHAS} on a line (the paper uses 10)")
    cfg.alphas = sorted(alphas)
    if cfg.refine and not (0.0 in alphas and 1.0 in alphas and any(0 < a < 1 for a in alphas)):
        raise ConfigError("config: refine needs alphas with both endpoints and at least one interior point")
    set_names = [e.name for e in cfg.eval_sets]
    if cfg.eval_sets[0].endpoints_only:
        raise ConfigError(f"config: eval set {set_names[0]!r}: the first eval set is on the lines (adaptive α and the "
                          "analysis judge by it); list an endpoints_only set after it")
    for e in cfg.eval_sets:
        where = f"eval set {e.name!r}"
        if set_names.count(e.name) > 1:
            raise ConfigError(f"config: {where} appears twice")
        if not e.text or len(e.text) > 2:
            raise ConfigError(f"config: {where}: 'text' must name one or two fields")
        bad = [m for m in e.metrics if m not in METRICS]
        if bad or not e.metrics:
            raise ConfigError(f"config: {where}: metric {bad[0] if bad else None!r} is not one of {', '.join(METRICS)}")


def _assign(raw: dict, key: str, value) -> None:
    """--set KEY=VALUE, where KEY may reach into the config: `storage_options.endpoint_url`, or an eval set by
    name or position, `eval_sets.hans.max_examples` / `eval_sets.1.max_examples`."""
    *parents, last = key.split(".")
    node = raw
    for depth, part in enumerate(parents):
        where = ".".join(parents[:depth + 1])
        if isinstance(node, list):
            named = [e for e in node if isinstance(e, dict) and e.get("name") == part]
            if not named and part.isdigit() and int(part) < len(node):
                named = [node[int(part)]]
            if not named:
                raise ConfigError(f"--set {key}: no {where!r} (a list: give an entry's name or position)")
            node = named[0]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parents[:depth])!r} is {node!r}, not a mapping or list")
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: {'.'.join(parents)!r} is not a mapping")
    node[last] = value


def _parse_value(text: str):
    return yaml.safe_load(text)


def schema() -> dict:
    """JSON schema of the sweep YAML, for editors (yaml-language-server, VS Code), from the same typed classes the
    loader builds; the shipped copy is configs/sweep.schema.json (tests/test_config.py keeps it current)."""
    from pydantic import TypeAdapter

    s = TypeAdapter(SweepConfig).json_schema()
    # The YAML's shorthands, which from_dict expands: a model as its ref, an eval set's text as one field name,
    # alphas as a grid size.
    strings = {"type": "array", "items": {"type": "string"}}
    s["properties"]["models"]["items"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/ModelSpec"}]}
    text = s["$defs"]["EvalSetSpec"]["properties"]["text"]
    text["anyOf"] = [{"type": "string"}, strings]
    del text["type"], text["items"]
    alphas = s["properties"]["alphas"]
    alphas["anyOf"] = [{"type": "integer", "minimum": 2}, {"type": "array", "items": alphas.pop("items")}]
    del alphas["type"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **s, "title": "lmc-ray sweep configuration"}


CONFIGS = Path(__file__).parent / "configs"  # the paper's tasks, offline overlays, variants: shipped in the package


def shipped() -> list[str]:
    """The configurations that ship with the package, as `--config` / `--overlay` take them."""
    return sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml"))


def find(path: str) -> Path:
    """A YAML file: `path` as given, else a shipped one — `mnli`, `offline/mnli`, or `configs/mnli.yaml` as a
    checkout spells it — so the same command works from a checkout, a pip install or a cluster node."""
    p = Path(path)
    if p.is_file():
        return p
    name = path[len("configs/"):] if path.startswith("configs/") else path
    for candidate in (CONFIGS / name, CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config: no such file {path!r} (nor a shipped configuration: {', '.join(shipped())})")


def _read_yaml(path: str) -> dict:
    """A YAML file's mapping, its paths relative to the file (a shipped one's to the working directory: they
    are templates, `store: results/mnli` meant for where the user runs them)."""
    p = find(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {p}: not valid YAML ({first_line(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {p}: top level must be a mapping")
    return raw if p.resolve().is_relative_to(CONFIGS.resolve()) else resolve_paths(raw, p.resolve().parent)


def merge(base: dict, overlay: dict, where: str) -> dict:
    """Overlay keys replace base keys, except eval sets: an overlay entry updates the base entry of its name
    (`rename: NEW` then gives it another name: a stand-in set named for what it is)."""
    out = {**base, **{k: v for k, v in overlay.items() if k != "eval_sets"}}
    if "eval_sets" in overlay:
        sets = {e.get("name"): dict(e) for e in base.get("eval_sets") or [] if isinstance(e, dict)}
        for e in overlay["eval_sets"] or []:
            if not isinstance(e, dict) or e.get("name") not in sets:
                raise ConfigError(f"config: {where}: eval set {e.get('name') if isinstance(e, dict) else e!r} "
                                  f"is not in the base configuration (it has: {', '.join(map(str, sets))})")
            sets[e["name"]].update({k: v for k, v in e.items() if k != "rename"})
            if e.get("rename"):
                sets[e["name"]]["name"] = e["rename"]
        out["eval_sets"] = list(sets.values())
    return out


# Structures stay in YAML (or reach through --set); every other field of SweepConfig is also a flag.
_NOT_FLAGS = {"models", "eval_sets", "storage_options", "planes"}


def _flags() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(SweepConfig) if f.name not in _NOT_FLAGS]


def parser(description: str) -> argparse.ArgumentParser:
    """--config, --overlay, --set, --max-examples, and one flag per SweepConfig field, its help the field's
    description: a field added to the config is a flag without being listed twice."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help="YAML file, or a shipped configuration (mnli, qqp, cola; `lmc-ray configs` lists "
                                    "them); flags below override it")
    p.add_argument("--overlay", action="append", default=[], metavar="FILE",
                   help="YAML merged over --config (eval sets by name), e.g. offline/mnli (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, value in YAML syntax (repeatable); nested keys with dots: "
                        "storage_options.endpoint_url=..., eval_sets.hans.max_examples=100 (a set by name or position)")
    p.add_argument("--max-examples", type=int, help="first K examples of every eval set on the lines")
    hints = typing.get_type_hints(SweepConfig, include_extras=True)
    for f in _flags():
        info = SweepConfig.__pydantic_fields__[f.name]
        words = _describe(hints[f.name])
        if f.name == "alphas":  # the flag takes a count as often as a list
            words, default = "a count, or a list in YAML syntax", len(info.get_default(call_default_factory=True))
        else:
            default = None if info.is_required() else info.get_default(call_default_factory=True)
        text = f"{info.description or ''} ({words}{'' if info.is_required() else f'; default: {default}'})"
        text = text.strip().replace("%", "%%")
        if hints[f.name] is bool:  # a switch: --per-example, or --per-example false
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, nargs="?", const=True, type=_parse_value,
                           metavar="BOOL", help=text)
        else:  # strings as typed; numbers, lists and choices in YAML syntax
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=f.name.upper(),
                           type=str if hints[f.name] is str else _parse_value, help=text)
    return p


def load(args: argparse.Namespace, default: dict | None = None) -> SweepConfig:
    """Config from --config (or `default`), then flags on top."""
    if args.config:
        raw = _read_yaml(args.config)
    elif default is not None:
        raw = dict(default)
    else:
        raise ConfigError("config: give --config FILE")
    for path in args.overlay:
        raw = merge(raw, _read_yaml(path), path)
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        _assign(raw, key.strip(), _parse_value(value))
    for f in _flags():
        if getattr(args, f.name, None) is not None:
            raw[f.name] = getattr(args, f.name)
    if args.max_examples is not None:  # subsamples the lines; endpoints_only sets keep their whole selection
        for e in raw.get("eval_sets") or []:
            if isinstance(e, dict) and not e.get("endpoints_only"):
                e["max_examples"] = args.max_examples
    return from_dict(raw)
