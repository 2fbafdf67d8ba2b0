"""Validation in one place: a rejected value becomes one line naming the key, the value and what is allowed, and
what no single field's type says (relations between fields and entries) is checked once the config is built.
Everything that can be checked without touching a model or a data file is checked here, so a typo fails in
milliseconds.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import ValidationError

from ..errors import ConfigError, first_line
from .sweep import MAX_ALPHAS, METRICS, SweepConfig


_BOUNDS = {("ge", 1): "a positive", ("ge", 0): "a non-negative", ("gt", 0): "a positive"}


def describe(hint) -> str:
    """A declared type in words, as the one-line error says what is allowed."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        inner, bounds = describe(args[0]), [m for info in args[1:] for m in getattr(info, "metadata", [info])]
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
        return " or ".join(describe(a) for a in args)
    if origin is list:
        return f"a list of ({describe(args[0])})"
    if origin is dict:
        return f"a mapping to ({describe(args[1])})" if args and args[1] is not Any else "a mapping"
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
            allowed = describe(typing.get_type_hints(cls, include_extras=True)[key])
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
    # Names a listing will add are known once the plan lists the hub; it validates the expanded config again.
    listed = bool(cfg.listings)
    if len(cfg.models) < 2 and not listed:
        raise ConfigError("config: a sweep needs at least 2 models")
    if cfg.pairs != "all":
        if not isinstance(cfg.pairs, dict) or len(cfg.pairs) != 1 or not {"anchors", "file"} & set(cfg.pairs):
            raise ConfigError(f"config: pairs must be 'all', {{anchors: [names]}} or {{file: PATH}}, got {cfg.pairs!r}")
        anchors = cfg.pairs.get("anchors", [])
        unknown = [a for a in anchors if a not in [m.name for m in cfg.models]] if isinstance(anchors, list) else [anchors]
        if (unknown and not listed) or ("anchors" in cfg.pairs and not anchors):
            raise ConfigError(f"config: pairs anchors: {unknown[0] if unknown else None!r} is not a model name")
    names = [m.name for m in cfg.models]
    for triple in cfg.planes.triples if cfg.planes else []:
        unknown = [n for n in triple if n not in names]
        if (unknown and not listed) or len(set(triple)) < 3:
            raise ConfigError(f"config: planes: {triple!r}: " + ("three different models make a plane"
                                                                  if len(set(triple)) < 3
                                                                  else f"{unknown[0]!r} is not a model name"))
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
        if e.choices is not None and (e.label is None or len(e.text) != 1):
            raise ConfigError(f"config: {where}: a multiple-choice set has one text field (the context) and a label "
                              "(the field naming the right choice)")
        if e.label is None and len(e.text) > 1:
            raise ConfigError(f"config: {where}: a text set (no label, scored by next-token prediction) has one text "
                              f"field, not {len(e.text)}")
        bad = [m for m in e.metrics if m not in METRICS]
        if bad or not e.metrics:
            raise ConfigError(f"config: {where}: metric {bad[0] if bad else None!r} is not one of {', '.join(METRICS)}")
    if cfg.ood is not None:
        _check_ood(cfg)


def _check_ood(cfg: SweepConfig) -> None:
    """SET/SUBSET/METRIC names a score the sweep will have: SUBSET is `all` or FIELDS=VALUES of one of the set's
    `subsets` (a value may hold '/', as HANS's subcase names do); METRIC one the set reports."""
    name, _, rest = cfg.ood.partition("/")
    subset, _, metric = rest.rpartition("/")
    sets = {e.name: e for e in cfg.eval_sets}
    where = f"config: ood {cfg.ood!r}"
    if not subset or name not in sets:
        raise ConfigError(f"{where}: give SET/SUBSET/METRIC with SET an eval set ({', '.join(sets)})")
    e = sets[name]
    if metric not in e.metrics:
        raise ConfigError(f"{where}: eval set {name!r} reports {', '.join(e.metrics)}, not {metric!r}")
    fields = subset.partition("=")[0].split(",")
    if subset != "all" and ("=" not in subset or fields not in e.subset_fields()):
        known = ", ".join(",".join(f) for f in e.subset_fields()) or "none"
        raise ConfigError(f"{where}: subset {subset!r} is not 'all' nor FIELDS=VALUES of one of eval set {name!r}'s "
                          f"subsets ({known})")
