"""A point of a stored line as a model: θ(α) = (1−α)·θ_A + α·θ_B written as an HF checkpoint with its tokenizer,
for those who merge models (of two LoRA adapters: their base with (1−α)·ΔW_A + α·ΔW_B merged in, or that point as
one LoRA adapter of the base). The two ends are the store's own: the weights it pinned, in its label order."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from ..compute import adapters, models as M
from ..compute import sources
from ..errors import ConfigError, cause
from ..compute.interpolate import WorkingModel
from ..storage.store import Store


def export(store: Store, a: str, b: str, alpha: float, out: str, cache_dir: str = "~/.cache/lmc_ray",
           storage_options: dict | None = None, as_adapter: bool = False) -> Path:
    """Write θ(α) between models `a` and `b` (names in the store) to `out`; returns the folder.

    as_adapter: of a store of adapters, write the point as one PEFT adapter of the store's base (adapters.line_point:
    exact, of rank up to r_A + r_B) instead of a merged checkpoint."""
    run = store.meta()
    fp, pins = run["fingerprint"], run.get("weights", {})
    if as_adapter and not fp.get("base"):
        raise ConfigError("export --adapter: the store's models are whole checkpoints, not LoRA adapters of one base; "
                          "export the point as a checkpoint (without --adapter)")
    specs = {m["name"]: m for m in run.get("registry", fp)["models"]}  # every model the store ever held
    for name in (a, b):
        if name not in specs:
            raise ConfigError(f"model {name!r} is not in the store (it has: {', '.join(list(specs)[:10])}, ...)")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha {alpha} is outside [0, 1]")
    folder = _target(store, out)
    paths = [sources.resolve(specs[n]["ref"], cache_dir, storage_options, pins.get(n)) for n in (a, b)]
    if as_adapter:
        base_path = sources.resolve(fp["base"], cache_dir, storage_options, fp.get("base_weights"))
        shapes = M.read_info(f"base {fp['base']}", base_path).shapes
        adapter, tensors = adapters.line_point((a, b), paths, shapes, alpha)
        save = partial(_save_adapter, config={**adapter, "base_model_name_or_path": fp["base"]}, tensors=tensors)
    elif fp.get("base"):
        model, base_path = _merged_adapters(fp, (a, b), paths, alpha, cache_dir, storage_options)
        save = model.save_pretrained
    else:
        infos = [M.read_info(n, p, specs[n].get("labels")) for n, p in zip((a, b), paths)]
        labels = M.preflight(infos)
        ends = [M.load(n, p, labels, declared=specs[n].get("labels")) for n, p in zip((a, b), paths)]
        working = WorkingModel(ends[0])
        wa, wb = (working.weights_of(m.state_dict()) for m in ends)
        working.set(wa, wb, alpha)  # in place, into A's model: the same lerp as the sweep's
        save, base_path = ends[0].save_pretrained, None
    tokenizer = fp.get("tokenizer")
    source = sources.resolve(tokenizer, cache_dir, storage_options) if tokenizer else paths[0]
    if base_path is not None and not tokenizer and not (source / "tokenizer_config.json").is_file():
        source = base_path
    from transformers import AutoTokenizer

    # Written beside `out` and renamed into place: a crash leaves no half checkpoint where a model is expected.
    part = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        save(part)
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(part)
        (part / MARKER).write_text(json.dumps(
            {"store": store.url, "model_a": a, "model_b": b, "alpha": alpha, "weights": [pins.get(a), pins.get(b)]}
            | ({"base": fp["base"], "base_weights": fp.get("base_weights")} if fp.get("base") else {}), indent=2))
        if folder.exists():  # empty, or an earlier export (_target checked)
            shutil.rmtree(folder)
        os.replace(part, folder)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return folder


def _merged_adapters(fp: dict, names, paths, alpha: float, cache_dir: str, storage_options: dict | None):
    """The base, pinned as the store pinned it, with the two adapters' line at α merged in, the sweep's own way
    (interpolate.WorkingModel.mix): a full checkpoint of the base's architecture."""
    base_path = sources.resolve(fp["base"], cache_dir, storage_options, fp.get("base_weights"))
    info = M.read_info(f"base {fp['base']}", base_path)
    model = M.load(f"base {fp['base']}", base_path, info.labels)
    working = WorkingModel(model)
    working.use_base(working.weights_of(model.state_dict()))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wa, wb = (working.weights_of(adapters.factors(n, p, shapes)) for n, p in zip(names, paths))
    working.set(wa, wb, alpha)
    return model, base_path


def _save_adapter(folder: Path, config: dict, tensors: dict) -> None:
    from safetensors.torch import save_file

    (folder / adapters.CONFIG).write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "adapter_model.safetensors"))


MARKER = "lmc_ray_export.json"


def _target(store: Store, out: str) -> Path:
    """`out` as a folder the export may fill, checked before any model is loaded: new, empty or an earlier
    export (replaced); never a non-empty folder of anything else (a source model, a store's curves), never
    inside a local store, and writable."""
    folder = Path(out).expanduser().absolute()
    if store.local and folder.resolve().is_relative_to(Path(store.root).resolve()):
        raise ConfigError(f"export --out {out!r}: inside the store {store.url!r}; write the model elsewhere")
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file()):
        raise ConfigError(f"export --out {out!r}: exists and is not an earlier export; give a new or empty folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder.parent).close()
    except OSError as e:
        raise ConfigError(f"export --out {out!r}: not writable ({e.strerror or cause(e)})") from None
    return folder
