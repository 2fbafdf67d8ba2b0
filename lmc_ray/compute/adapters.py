"""LoRA adapters (PEFT folders: adapter_config.json + adapter_model.safetensors) as the models of a sweep.

A process holds the base model once and each adapter as its low-rank factors: for every target weight W of the
base, ΔW = U·V with U (rows of W × r) and V (r × columns of W), PEFT's scale (lora_alpha / r, or / √r with rsLoRA)
folded into one of them and its transposes (GPT-2's Conv1D, embeddings) resolved here, so that the working model
(interpolate.py) only ever computes W = W_base + Σ c_k U_k V_k. The files are read without PEFT; what this
module does not understand (DoRA, trained biases, modules_to_save, convolution LoRA) is refused by name.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, cause

CONFIG = "adapter_config.json"
U, V = "::U", "::V"  # the two factors of a target, keyed by its base parameter's name + U or V

# PEFT's saved names: base_model.model.<module>.lora_A.weight (.default. when the adapter name was kept).
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_(?:embedding_)?[AB])(?:\.default)?(?:\.weight)?$")


@dataclass
class Adapter:
    """What the driver knows of an adapter before any weights move."""
    name: str
    base: str | None  # its adapter_config.json's base_model_name_or_path
    targets: dict[str, int]  # base parameter -> rank
    bytes: int  # of its factors in fp32


def is_adapter(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and not (folder / "config.json").is_file()


def read_config(name: str, folder: Path) -> dict:
    """adapter_config.json, refused in one line unless it describes a plain LoRA this module can apply exactly."""
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"model {name!r}: unreadable {CONFIG} ({cause(e)})") from None
    kind = cfg.get("peft_type", "LORA")
    unsupported = [f"peft_type {kind}" if kind != "LORA" else "",
                   "DoRA (use_dora)" if cfg.get("use_dora") else "",
                   "trained biases (bias: {})".format(cfg.get("bias")) if cfg.get("bias", "none") != "none" else "",
                   "lora_bias" if cfg.get("lora_bias") else "",
                   "modules_to_save" if cfg.get("modules_to_save") else ""]
    unsupported = [u for u in unsupported if u]
    if unsupported:
        raise ConfigError(f"model {name!r}: a LoRA adapter with {unsupported[0]}; lmc-ray interpolates plain LoRA "
                          "factors only")
    return cfg


def weights_file(name: str, folder: Path) -> Path:
    for f in ("adapter_model.safetensors", "adapter_model.bin"):
        if (folder / f).is_file():
            return folder / f
    raise ConfigError(f"model {name!r}: no adapter_model.safetensors or adapter_model.bin in {folder}")


def _alpha(cfg: dict, module: str) -> float:
    """lora_alpha, or the alpha_pattern entry whose key names the module (PEFT matches a key as a suffix of the
    module's dotted name, or as a regular expression of it)."""
    for key, value in (cfg.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module) or re.fullmatch(key, module):
            return float(value)
    return float(cfg.get("lora_alpha", 8))


def layout(name: str, cfg: dict, shapes: dict[str, tuple[int, ...]],
           base_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, str, float, bool]]:
    """From tensor shapes alone: each target's base parameter -> (A's key, B's key, scale, transposed).
    Refuses keys that are not LoRA factors and factors that do not fit their base weight."""
    parts: dict[str, dict[str, str]] = {}
    for key in shapes:
        m = _KEY.match(key)
        if m is None:
            raise ConfigError(f"model {name!r}: adapter tensor {key!r} is not a LoRA factor; lmc-ray interpolates "
                              "plain LoRA factors only")
        parts.setdefault(m["module"], {})[m["part"][-1]] = key
    if not parts:
        raise ConfigError(f"model {name!r}: the adapter holds no LoRA factors")
    out = {}
    for module, ab in sorted(parts.items()):
        param = f"{module}.weight"
        if set(ab) != {"A", "B"}:
            raise ConfigError(f"model {name!r}: target {module!r} has lora_{next(iter(ab))} only")
        if param not in base_shapes:
            raise ConfigError(f"model {name!r}: target {module!r} is not a module of the base (no {param!r})")
        a, b = shapes[ab["A"]], shapes[ab["B"]]
        w = base_shapes[param]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or len(w) != 2:
            raise ConfigError(f"model {name!r}: target {module!r}: factors {a} and {b} are not a linear LoRA of "
                              f"the base weight {w}")
        # PEFT's delta is B·A, transposed for Conv1D (fan_in_fan_out) and embedding tables
        transposed = bool(cfg.get("fan_in_fan_out")) or "embedding" in ab["A"]
        if ((a[1], b[0]) if transposed else (b[0], a[1])) != w:
            raise ConfigError(f"model {name!r}: target {module!r}: factors {a} and {b} do not fit the base weight "
                              f"{param!r} of shape {w}")
        r = a[0]
        scale = _alpha(cfg, module) / (math.sqrt(r) if cfg.get("use_rslora") else r)
        out[param] = (ab["A"], ab["B"], scale, transposed)
    return out


def header_shapes(name: str, folder: Path) -> dict[str, tuple[int, ...]]:
    f = weights_file(name, folder)
    try:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), "pt") as st:
                return {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
        return {k: tuple(v.shape) for k, v in torch.load(f, map_location="cpu", mmap=True, weights_only=True).items()}
    except Exception as e:  # the formats raise many types for a damaged file
        raise ConfigError(f"model {name!r}: cannot read {f.name} ({cause(e)})") from None


def inspect(name: str, folder: Path, base_shapes: dict[str, tuple[int, ...]],
            shapes: dict[str, tuple[int, ...]] | None = None) -> Adapter:
    """The driver's checks, from adapter_config.json and the tensor headers (`shapes` when already read remotely)."""
    cfg = read_config(name, folder)
    shapes = shapes if shapes is not None else header_shapes(name, folder)
    targets = layout(name, cfg, shapes, base_shapes)
    size = sum(4 * math.prod(shapes[k]) for a, b, _, _ in targets.values() for k in (a, b))
    return Adapter(name, cfg.get("base_model_name_or_path"), {p: shapes[a][0] for p, (a, *_) in targets.items()},
                   size)


def _factors(name: str, folder: Path, base_shapes: dict[str, tuple[int, ...]]):
    """Per target: (base parameter, (A's key, B's key), A, B, scale, transposed), PEFT's factors in fp32 as saved."""
    cfg = read_config(name, folder)
    f = weights_file(name, folder)
    try:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(f))
        else:
            tensors = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model {name!r}: cannot read {f.name} ({cause(e)})") from None
    for param, (a, b, scale, transposed) in layout(name, cfg, {k: tuple(t.shape) for k, t in tensors.items()},
                                                     base_shapes).items():
        A, B = tensors[a].float(), tensors[b].float()
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise ConfigError(f"model {name!r}: LoRA factors of {param!r} contain NaN or inf")
        yield param, (a, b), A, B, scale, transposed


def factors(name: str, folder: Path, base_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The adapter as {param::U, param::V} in fp32, ΔW(param) = U @ V in the base weight's own layout."""
    out = {}
    for param, _, A, B, scale, transposed in _factors(name, folder, base_shapes):
        u, v = (A.T, scale * B.T) if transposed else (scale * B, A)
        out[param + U], out[param + V] = u.contiguous(), v.contiguous()
    return out


def line_point(names, folders, base_shapes: dict[str, tuple[int, ...]], alpha: float) -> tuple[dict, dict]:
    """base + (1−α)·ΔW_A + α·ΔW_B as one plain LoRA adapter: (adapter_config.json's dict, tensors by PEFT's names).

    Exact, not a fit: per target the factors are stacked along the rank, A = [A_A; A_B] and
    B = [(1−α)·s_A·B_A, α·s_B·B_B], so B·A is the mix of the two deltas in whatever layout the module keeps it
    (Conv1D and embeddings transpose the product, the same for both). A target of one adapter only keeps its own
    factors. Every target is zero-padded to the largest stacked rank R, with lora_alpha = R: one r and a scale of 1
    for all, which any PEFT version reads without rank or alpha patterns."""
    cfgs = [read_config(n, f) for n, f in zip(names, folders)]
    stacked: dict[str, tuple[tuple[str, str], list, list]] = {}
    for name, folder, weight in zip(names, folders, (1.0 - alpha, alpha)):
        for param, keys, A, B, scale, _ in _factors(name, folder, base_shapes):
            entry = stacked.setdefault(param, (keys, [], []))
            entry[1].append(A)
            entry[2].append(weight * scale * B)
    rank = max(sum(len(a) for a in As) for _, As, _ in stacked.values())
    tensors = {}
    for keys, As, Bs in stacked.values():
        A, B = torch.cat(As), torch.cat(Bs, dim=1)
        pad = rank - len(A)
        ka, kb = (re.sub(r"\.default(?=\.weight$|$)", "", k) for k in keys)  # PEFT saves without its adapter name
        tensors[ka] = torch.nn.functional.pad(A, (0, 0, 0, pad)).contiguous()
        tensors[kb] = torch.nn.functional.pad(B, (0, pad)).contiguous()
    config = {**cfgs[0], "r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
              "target_modules": sorted(p[: -len(".weight")] for p in stacked), "inference_mode": True}
    return config, tensors


def delta(w: dict[str, torch.Tensor], param: str) -> torch.Tensor | None:
    """The dense ΔW of one target (None when the adapter does not touch it): for distances, not for evaluation."""
    return w[param + U] @ w[param + V] if param + U in w else None


def targets(w: dict[str, torch.Tensor]) -> list[str]:
    return [k[: -len(U)] for k in w if k.endswith(U)]
