"""Loading a population of HF sequence classifiers or causal LMs, and the preflight that checks they can be mixed.

The preflight reads only config.json and the checkpoint headers (safetensors) or a memory map
(pytorch_model.bin), so it costs milliseconds per model even for N = 100.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, cause
from .sources import checkpoint_files


@dataclass
class ModelInfo:
    name: str
    path: Path
    architecture: str
    labels: list[str]  # id2label in the checkpoint's own order
    shapes: dict[str, tuple[int, ...]]
    model_type: str | None = None
    positions: int | None = None  # tokens an input may have (max_position_embeddings, less RoBERTa's offset)
    kind: str = "classifier"  # or "causal_lm"


CAUSAL_LM = "causal_lm"


def kind_of(architecture: str) -> str:
    """What a checkpoint's architecture is scored as: next-token prediction (GPT2LMHeadModel, LlamaForCausalLM,
    ...) or classification (anything else: a bare encoder gets a new classifier head, as finetuning starts)."""
    return CAUSAL_LM if architecture.endswith(("ForCausalLM", "LMHeadModel")) else "classifier"


_GENERIC = re.compile(r"^LABEL_\d+$")


def own_labels(name: str, id2label: dict, declared: list[str] | None) -> list[str]:
    """The checkpoint's class names in id order: its config's, or the ones the sweep config declares."""
    found = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if declared is None:
        return found
    if len(declared) != len(found):
        raise ConfigError(f"model {name!r}: {len(declared)} labels declared, the checkpoint has {len(found)} classes")
    if not all(_GENERIC.match(f) for f in found) and [f.lower() for f in found] != [d.lower() for d in declared]:
        raise ConfigError(f"model {name!r}: declared labels {declared} contradict its config.json id2label {found}")
    return [str(d) for d in declared]


def read_info(name: str, path: Path, declared: list[str] | None = None,
              shapes: dict[str, tuple[int, ...]] | None = None) -> ModelInfo:
    """config.json from `path`; tensor shapes from its checkpoint headers unless already read (remote models)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"model {name!r}: no config.json in {path}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"model {name!r}: unreadable config.json ({cause(e)})") from None
    archs = cfg.get("architectures") or [cfg.get("model_type", "?")]
    what = kind_of(archs[0])
    if what == CAUSAL_LM:
        if declared is not None:
            raise ConfigError(f"model {name!r}: labels are for classifiers; {archs[0]} is a causal LM")
        labels = []
    else:
        id2label = cfg.get("id2label") or {str(i): f"LABEL_{i}" for i in range(cfg.get("num_labels", 2))}
        labels = own_labels(name, id2label, declared)
    positions = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    if positions and cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (cfg.get("pad_token_id") or 1) + 1  # positions count from padding_idx + 1
    if shapes is not None:
        return ModelInfo(name, path, archs[0], labels, shapes, cfg.get("model_type"), positions, what)
    files = checkpoint_files(path)
    if not files:
        raise ConfigError(f"model {name!r}: no *.safetensors or pytorch_model*.bin in {path}")
    shapes = {}
    for f in files:
        try:
            shapes.update(_header_shapes(f))
        except Exception as e:  # the formats raise many types for a damaged file
            raise ConfigError(f"model {name!r}: cannot read checkpoint {f.name} ({cause(e)})") from None
    return ModelInfo(name, path, archs[0], labels, shapes, cfg.get("model_type"), positions, what)


def max_length(asked: int | str, infos: list[ModelInfo]) -> int:
    """The tokens kept per example: `asked`, or for auto the paper's 512 unless the models have fewer positions;
    for causal LMs every position the models have (a text's perplexity is not cut short unasked)."""
    limit = min((m.positions for m in infos if m.positions), default=None)
    if asked == "auto":
        if infos[0].kind == CAUSAL_LM and limit:
            return limit
        return min(512, limit or 512)
    if limit is not None and asked > limit:
        short = next(m for m in infos if m.positions == limit)
        raise ConfigError(f"config: max_length {asked} is more than model {short.name!r} has positions ({limit}); "
                          f"set max_length {limit} or less, or auto")
    return asked


def _header_shapes(f: Path) -> dict[str, tuple[int, ...]]:
    if f.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(f), "pt") as st:
            return {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
    sd = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
    return {k: tuple(v.shape) for k, v in sd.items()}


def preflight(infos: list[ModelInfo]) -> list[str]:
    """Check that every model can be interpolated with the first; return the canonical label order."""
    ref = infos[0]
    canon = [lab.lower() for lab in ref.labels]
    for m in infos[1:]:
        if m.kind != ref.kind:
            words = {CAUSAL_LM: "a causal LM", "classifier": "a classifier"}
            raise ConfigError(f"model {m.name!r} is {words[m.kind]} ({m.architecture}), {ref.name!r} "
                              f"{words[ref.kind]} ({ref.architecture}): a sweep's models are all of one kind")
        if m.architecture != ref.architecture:
            raise ConfigError(f"model {m.name!r}: architecture {m.architecture} differs from {ref.name!r} ({ref.architecture})")
        missing = sorted(set(ref.shapes) - set(m.shapes))
        extra = sorted(set(m.shapes) - set(ref.shapes))
        if missing or extra:
            what = f"lacks parameter {missing[0]!r}" if missing else f"has extra parameter {extra[0]!r}"
            raise ConfigError(f"model {m.name!r}: {what} (compared with {ref.name!r})")
        for k, shape in ref.shapes.items():
            if m.shapes[k] != shape:
                raise ConfigError(f"model {m.name!r}: parameter {k!r} has shape {m.shapes[k]}, {ref.name!r} has {shape}")
        if sorted(lab.lower() for lab in m.labels) != sorted(canon):
            raise ConfigError(f"model {m.name!r}: labels {m.labels} differ from {ref.name!r}'s {ref.labels}")
    return ref.labels


def quiet() -> None:
    """No per-model loading bars or load reports from transformers: one per model per process would drown
    our own progress (a new classifier head is expected when finetuning from a base)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # PEFT (0.21) reads transformers' deprecated model.is_gradient_checkpointing on every adapter it wraps.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def head_linear(model: torch.nn.Module, num_labels: int) -> torch.nn.Linear:
    """The output layer: the last Linear producing num_labels logits (BERT's classifier, RoBERTa's out_proj, ...)."""
    found = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not found:
        raise ConfigError(f"model {model.name_or_path!r}: no output layer with {num_labels} outputs")
    return found[-1]


def load(name: str, path: Path, canonical_labels: list[str], dtype: torch.dtype = torch.float32,
         declared: list[str] | None = None):
    """The model in eval mode; a classifier with its output rows permuted into the canonical label order
    (no labels: a causal LM).

    Interpolating two heads only makes sense row by row for the same class, so a checkpoint whose
    id2label lists the classes in another order is reordered here, by name, never by position.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    quiet()
    auto = AutoModelForSequenceClassification if canonical_labels else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(str(path), dtype=dtype)
    except Exception as e:
        raise ConfigError(f"model {name!r}: cannot load ({cause(e)})") from None
    if not canonical_labels:
        return model.eval()
    own = [lab.lower() for lab in own_labels(name, model.config.id2label, declared)]
    perm = [own.index(lab.lower()) for lab in canonical_labels]
    if perm != list(range(len(perm))):
        head = head_linear(model, len(perm))
        with torch.no_grad():
            head.weight.copy_(head.weight[perm])
            if head.bias is not None:
                head.bias.copy_(head.bias[perm])
        model.config.id2label = dict(enumerate(canonical_labels))
        model.config.label2id = {lab: i for i, lab in enumerate(canonical_labels)}
    model.eval()
    return model


def float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that interpolation mixes: every floating-point parameter and buffer."""
    return {k: v.detach() for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}


def check_finite(name: str, state: dict[str, torch.Tensor]) -> None:
    for k, v in state.items():
        if not bool(torch.isfinite(v).all()):
            raise ConfigError(f"model {name!r}: parameter {k!r} contains NaN or inf")

