"""A configuration from YAML: shipped files found by name, overlays merged, shorthands expanded (a model as its
ref, ranges, `steps:`, an eval set's text as one field, alphas as a grid size), paths made absolute.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml

from ..errors import ConfigError, first_line
from .checks import build, validate
from .refs import RANGE, at_step, expand, hub_id, kind, same_ref
from .sweep import MAX_ALPHAS, EvalSetSpec, HubListSpec, ModelSpec, PlanesSpec, SweepConfig, grid


LISTING_KEYS = ("adapters_of", "finetunes_of")


def _models(raw) -> tuple[list[ModelSpec], list[HubListSpec]]:
    """The models a config names, and its hub listings ({adapters_of: BASE}), which the plan makes models."""
    if isinstance(raw, dict) and set(raw) & set(LISTING_KEYS):  # `models: {adapters_of: BASE}`, the listing alone
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("config: 'models' must be a non-empty list")
    out, listings = [], []
    for item in raw:
        if isinstance(item, dict) and set(item) & set(LISTING_KEYS):
            where = f"config: models: {item!r}"
            spec = build(HubListSpec, item, where)
            if bool(spec.adapters_of) == bool(spec.finetunes_of):
                raise ConfigError(f"{where}: give one of adapters_of or finetunes_of")
            if not hub_id(spec.base) or "@" in spec.base:
                raise ConfigError(f"{where}: {spec.key} {spec.base!r} is not a hub repository id (org/name)")
            listings.append(spec)
        elif isinstance(item, str):
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
            if steps and kind(refs[0]) == "hub" and "@" in refs[0]:
                raise ConfigError(f"{where}: steps pick commits on main; give the repository without @revision")
            for r, n in zip(refs, names):
                out += [ModelSpec(r if s == "final" else at_step(r, s), f"{n}@{s}", spec.labels, str(s))
                        for s in steps] if steps else [ModelSpec(r, n if item.get("name") else "", spec.labels)]
        else:
            raise ConfigError(f"config: model entry {item!r} must be a string, a mapping with 'ref', or a hub listing "
                              "{adapters_of: BASE}")
    return out, listings


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
    first = RANGE.sub(lambda m: m.group(1), value)  # a range, m{0..9}, is local or not as its first member is
    if what == "model":
        remote = hub_id(first)
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
    if "listings" in raw:
        raise ConfigError("config: unknown key 'listings' (hub listings are written under models: {adapters_of: BASE})")
    raw["models"], raw["listings"] = _models(raw["models"])
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


CONFIGS = Path(__file__).parent.parent / "configs"  # the paper's tasks, offline overlays, variants: shipped in the package


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


def read_yaml(path: str) -> dict:
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
