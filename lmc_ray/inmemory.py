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

from .errors import ConfigError
from .sources import fill_once


def _digest(model) -> str:
    h = hashlib.blake2b(model.config.to_json_string().encode(), digest_size=12)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _model(entry: dict, cache: Path) -> dict:
    entry = dict(entry)
    model, tokenizer = entry.pop("model"), entry.pop("tokenizer", None)
    name = entry.get("name")
    if not name:
        raise ConfigError("config: an in-memory model needs a 'name'")
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
    """`raw` (a config mapping) with each model given as {"name", "model"[, "tokenizer"]} and each eval set given
    with a "dataset" replaced by files under CACHE_DIR/in-memory/; anything else is left as it is."""
    from .config import SweepConfig

    cache = Path(raw.get("cache_dir") or SweepConfig.cache_dir).expanduser() / "in-memory"
    out = dict(raw)
    if isinstance(raw.get("models"), list):
        out["models"] = [_model(m, cache) if isinstance(m, dict) and "model" in m else m for m in raw["models"]]
    if isinstance(raw.get("eval_sets"), list):
        out["eval_sets"] = [_eval_set(e, cache) if isinstance(e, dict) and "dataset" in e else e
                            for e in raw["eval_sets"]]
    return out
