"""The command line of every job: --config, --overlay, --set and one flag per setting, read into a SweepConfig."""
from __future__ import annotations

import argparse
import dataclasses
import typing

import yaml

from ..errors import ConfigError
from .checks import describe
from .loading import from_dict, merge, read_yaml
from .sweep import DERIVED, SweepConfig


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


# Structures stay in YAML (or reach through --set); every other field of SweepConfig is also a flag.
_NOT_FLAGS = {"models", "eval_sets", "storage_options", "planes", *DERIVED}


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
        words = describe(hints[f.name])
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
        raw = read_yaml(args.config)
    elif default is not None:
        raw = dict(default)
    else:
        raise ConfigError("config: give --config FILE")
    for path in args.overlay:
        raw = merge(raw, read_yaml(path), path)
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
