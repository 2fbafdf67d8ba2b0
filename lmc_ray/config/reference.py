"""What the configuration is, for readers other than the loader: the JSON schema editors validate the YAML with, and
the configuration reference in docs/ — both from the typed classes and their field descriptions."""
from __future__ import annotations

import dataclasses
import typing

from .checks import describe
from .sweep import DERIVED, EvalSetSpec, HubListSpec, ModelSpec, PlanesSpec, SweepConfig


def schema() -> dict:
    """JSON schema of the sweep YAML, for editors (yaml-language-server, VS Code), from the same typed classes the
    loader builds; the shipped copy is configs/sweep.schema.json (tests/test_config.py keeps it current)."""
    from pydantic import TypeAdapter

    s = TypeAdapter(SweepConfig).json_schema()
    # The YAML's shorthands, which from_dict expands: a model as its ref, an eval set's text as one field name,
    # alphas as a grid size.
    strings = {"type": "array", "items": {"type": "string"}}
    listing = {"$ref": "#/$defs/HubListSpec"}
    s["properties"]["models"] = {**s["properties"]["models"], "anyOf": [
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/ModelSpec"}, listing]}}, listing]}
    del s["properties"]["models"]["type"], s["properties"]["models"]["items"]
    for key in DERIVED:
        del s["properties"][key]
    text = s["$defs"]["EvalSetSpec"]["properties"]["text"]
    text["anyOf"] = [{"type": "string"}, strings]
    del text["type"], text["items"]
    alphas = s["properties"]["alphas"]
    alphas["anyOf"] = [{"type": "integer", "minimum": 2}, {"type": "array", "items": alphas.pop("items")}]
    del alphas["type"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **s, "title": "lmc-ray sweep configuration"}


def markdown(extra: tuple[tuple[str, type, str], ...] = ()) -> str:
    """The configuration reference as Markdown: one table per class, each field's type in the words an error uses,
    its default and its description. `extra` adds (title, class, introduction) sections, as the finetuning config
    (a layer above this one) does."""
    sections = ((f"Sweep (`{SweepConfig.__name__}`)", SweepConfig,
                 "The top level of a sweep's YAML (`lmc-ray sweep --config FILE`). Every setting but the four "
                 "structures (models, eval_sets, planes, storage_options) is also a flag, `--max-batch-size 128`; "
                 "any key, nested ones too, is reachable as `--set KEY=VALUE`."),
                ("A model (`models:` entries)", ModelSpec,
                 "A string is a model's ref. A mapping may also give `steps: [N, ..., final]`, which expands into "
                 "one model per step. A ref may hold ranges, `org/bert_{0..99}`, which expand into one model each."),
                ("A hub listing (`models:` entries `{adapters_of: BASE}`)", HubListSpec,
                 "Lists models from the hub by the base their model cards name; give adapters_of or finetunes_of. "
                 "`models: {adapters_of: BASE}` alone is the same as a list of that one entry."),
                ("An eval set (`eval_sets:` entries)", EvalSetSpec,
                 "The first set is on every line and decides the barriers. `text` may be one field name."),
                ("Planes (`planes:`)", PlanesSpec, "Planes through three models, evaluated after the pairs."),
                *extra)
    out = ["# Configuration reference", "",
           "Generated from the configuration's own classes by `lmc-ray configs --reference > docs/configuration.md`;"
           " tests/test_config.py checks that it is current. The same descriptions are the flags' `--help` and the"
           " JSON schema (`lmc-ray configs --schema`).", ""]
    for title, cls, intro in sections:
        out += [f"## {title}", "", intro, "", "| key | type | default | description |", "|---|---|---|---|"]
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if f.name in DERIVED:
                continue
            info = cls.__pydantic_fields__[f.name]
            default = "required" if info.is_required() else f"`{info.get_default(call_default_factory=True)!r}`"
            words = describe(hints[f.name])
            if f.name == "alphas":  # as the YAML writes it, before from_dict builds the grid
                default, words = "`10` (the paper's grid)", "a count, or a list of numbers"
            text = " ".join((info.description or "").split()).replace("|", "\\|")
            out.append(f"| `{f.name}` | {words} | {default} | {text} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
