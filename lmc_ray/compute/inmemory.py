"""Models and eval sets handed to the Python API as objects, written once into the cache as ordinary files.

The sweep then treats them like any other: the plan pins them by content, Ray's actors load them by path,
and a rerun with the same objects finds the same files (named by a hash of the weights, or by the dataset's
own fingerprint) and resumes. The cache must be visible to the actors: true for a notebook with a local Ray
instance or the in-process executor; on a multi-node cluster give paths on shared storage or S3 instead.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..config import SweepConfig
from ..errors import ConfigError, first_line
from .sources import fill_once, resolve


def _digest(model) -> str:
    h = hashlib.blake2b(model.config.to_json_string().encode(), digest_size=12)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _with_weights(name: str, state: dict, base, cache_dir: str, storage_options: dict):
    """A transformers model shaped like `base` (a model reference or a transformers model) holding `state`, and the
    base's tokenizer when the base is a reference."""
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = None
    if isinstance(base, str):
        folder = str(resolve(base, cache_dir, storage_options))
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError):  # a base without tokenizer files: the sweep's `tokenizer:` must name one
            pass
    elif hasattr(base, "save_pretrained"):
        model = copy.deepcopy(base)
    else:
        raise ConfigError(f"config: model {name!r}: a state_dict needs a 'base' for its architecture (a model "
                          f"reference or a transformers model), got {type(base).__name__}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # shapes that do not fit; not a mapping of tensors
        raise ConfigError(f"config: model {name!r}: the state_dict does not fit its base ({first_line(e)})") from None
    if missing or unexpected:
        raise ConfigError(f"config: model {name!r}: the state_dict does not fit its base ({len(missing)} keys missing, "
                          f"e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    return model, tokenizer


def _model(entry: dict, cache: Path, raw: dict) -> dict:
    entry = dict(entry)
    name = entry.get("name")
    if not name:
        raise ConfigError("config: an in-memory model needs a 'name'")
    if "state_dict" in entry:
        model, tokenizer = _with_weights(name, entry.pop("state_dict"), entry.pop("base", None),
                                         raw.get("cache_dir") or SweepConfig.cache_dir, raw.get("storage_options") or {})
        tokenizer = entry.pop("tokenizer", None) or tokenizer
    else:
        model, tokenizer = entry.pop("model"), entry.pop("tokenizer", None)
    if not hasattr(model, "save_pretrained"):
        raise ConfigError(f"config: model {name!r}: an in-memory model must be a transformers model "
                          f"(save_pretrained), got {type(model).__name__}")

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    entry["ref"] = str(fill_once(cache / f"model-{_digest(model)}{'-tok' if tokenizer is not None else ''}", name, fill))
    return entry


def _eval_set(entry: dict, cache: Path) -> dict:
    entry = dict(entry)
    dataset = entry.pop("dataset")
    name = entry.get("name", "?")
    if not hasattr(dataset, "to_parquet") or not hasattr(dataset, "_fingerprint"):
        raise ConfigError(f"config: eval set {name!r}: 'dataset' must be a datasets.Dataset, got {type(dataset).__name__}")
    path = cache / f"eval-{dataset._fingerprint}.parquet"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".part-{os.getpid()}")
        dataset.to_parquet(str(tmp))
        os.replace(tmp, path)  # whole or not at all
    entry["path"] = str(path)
    return entry


def materialize(raw: dict) -> dict:
    """`raw` (a config mapping) with each model given as {"name", "model"[, "tokenizer"]} or {"name", "state_dict",
    "base"[, "tokenizer"]} and each eval set given with a "dataset" replaced by files under CACHE_DIR/in-memory/;
    anything else is left as it is."""
    cache = Path(raw.get("cache_dir") or SweepConfig.cache_dir).expanduser() / "in-memory"
    out = dict(raw)
    if isinstance(raw.get("models"), list):
        out["models"] = [_model(m, cache, raw) if isinstance(m, dict) and {"model", "state_dict"} & set(m) else m for m in raw["models"]]
    if isinstance(raw.get("eval_sets"), list):
        out["eval_sets"] = [_eval_set(e, cache) if isinstance(e, dict) and "dataset" in e else e
                            for e in raw["eval_sets"]]
    return out
