"""Typed sweep configuration: YAML file + flag overrides, validated in one place.

    sweep.py      the settings as typed classes, every field described
    refs.py       how a model is referred to (local, hub, s3, pkg; ranges; step checkpoints)
    checks.py     one line per rejected value; relations between fields
    loading.py    YAML files, shipped configurations, overlays, shorthands
    flags.py      the command line: --config, --overlay, --set, one flag per setting
    reference.py  the JSON schema and the configuration reference (docs/configuration.md)
"""
from ..errors import ConfigError
from .checks import build, validate
from .flags import load, parser
from .loading import CONFIGS, FILE_FORMATS, eval_set, find, from_dict, local_path, merge, shipped
from .reference import markdown, schema
from .sweep import (METRICS, READABLE_FORMATS, STORE_FORMAT, TYPED, EvalSetSpec, HubListSpec, ModelSpec, NonNegative,
                    NonNegativeNumber, PlanesSpec, Positive, PositiveNumber, SweepConfig, grid, on_line)

__all__ = ["CONFIGS", "ConfigError", "EvalSetSpec", "FILE_FORMATS", "HubListSpec", "METRICS", "ModelSpec", "NonNegative",
           "NonNegativeNumber", "PlanesSpec", "Positive", "PositiveNumber", "READABLE_FORMATS", "STORE_FORMAT",
           "SweepConfig", "TYPED", "build", "eval_set", "find", "from_dict", "grid", "load", "local_path",
           "markdown", "merge", "on_line", "parser", "schema", "shipped", "validate"]
