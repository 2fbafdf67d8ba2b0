"""Finetune one copy of a base model; copies differ only in data order and in what is newly initialised (a
classifier's head, a LoRA adapter's factors).

A classifier learns its labels; a causal LM (no `labels`) learns next-token prediction of the train set's text.
Either may train a LoRA adapter instead of every weight (`lora:`), saved as PEFT writes one.

No Ray here: `jobs/finetune.py` runs one Tune trial per seed around `train`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from pydantic.dataclasses import dataclass

from ..compute import sources
from ..compute.core import BATCH_TOKENS, DTYPES, concrete_dtype, pick_device
from ..compute.data import EvalData, prepare
from ..compute import models as M
from ..compute.evaluate import for_set
from ..compute.metrics import COLUMNS, LOSS
from ..compute.models import quiet
from ..config import refs
from ..config import TYPED, ConfigError, EvalSetSpec, NonNegativeNumber, Positive, PositiveNumber, build, eval_set


@dataclass(config=TYPED)
class LoraSpec:
    r: Positive = 8
    """Rank of the adapter's factors."""
    alpha: PositiveNumber = 16.0
    """PEFT's lora_alpha: the adapter's ΔW is (alpha / r)·B·A."""
    targets: list[str] | None = None
    """Names of the modules the adapter wraps; default: PEFT's choice for the architecture (GPT-2: c_attn)."""


@dataclass(config=TYPED)
class FinetuneConfig:
    base: str
    """Model reference of the shared pretrained start (local, hub, s3)."""
    train: EvalSetSpec
    """The training set, described like an evaluation set (max_examples: null = all)."""
    eval_sets: list[EvalSetSpec]
    """Reported while training (in-domain and diagnostic)."""
    output: str
    """Local directory or s3://bucket/prefix; model k goes to OUTPUT/seed_k."""
    labels: Annotated[list[str], Field(min_length=2)] | None = None
    """The classifier's label names, in order. None: the base is a causal LM, trained to predict the next token
    of the train set's text (the train and eval sets are then text sets, without a label)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """random: take only the base's architecture (config.json) and tokenizer, and draw every weight from the seed, a
    model trained from scratch (the base may then be a folder without weights, as lm_start.py writes one)."""
    lora: LoraSpec | None = None
    """Train a LoRA adapter of the base instead of every weight; OUTPUT/seed_k is then a PEFT adapter folder whose
    base_model_name_or_path is `base` as written here. The seed draws the adapter's initial factors."""
    seeds: Annotated[list[int], Field(min_length=1)] = field(default_factory=lambda: list(range(12)))
    """One model per seed: the seed draws its classifier head and the order of its training examples."""
    epochs: PositiveNumber = 2.0
    """Passes over the training set (fractions allowed)."""
    batch_size: Positive = 32
    """Training examples per optimizer step."""
    lr: PositiveNumber = 5e-4
    """Peak learning rate of AdamW, reached after the warmup and decayed linearly to 0."""
    weight_decay: NonNegativeNumber = 0.01
    """AdamW's decoupled weight decay."""
    warmup: NonNegativeNumber = 0.1
    """Fraction of the steps over which the learning rate rises linearly from 0."""
    reports: Positive = 4
    """Metric reports per run."""
    max_length: Positive = 128
    """Tokens kept per training and evaluation example (truncation)."""
    cache_dir: str = "~/.cache/lmc_ray"
    """Where a base model read from S3 is cached (hub files go to huggingface_hub's own cache)."""
    storage_options: dict = field(default_factory=dict)
    """fsspec options for s3:// paths (base, output)."""
    save_steps: list[Annotated[int, Field(ge=1)]] = field(default_factory=list)
    """Also keep the model at these steps, each a loadable checkpoint at OUTPUT/seed_k-stepN (a sweep names them with
    `steps: [N, ..., final]`), for basin commitment during training."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the trial's GPU when it has one (Ray Tune gives each trial gpus_per_trial), else the CPU."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Autocast precision of the forward and backward passes; weights and optimizer state stay float32 either way.
    auto: bfloat16 on a GPU, float32 on a CPU."""


def batches(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """The example indices of each step: epochs of a permutation drawn from the seed on the CPU, so a seed sees its
    data in the same order on any device."""
    order = torch.Generator().manual_seed(10_000 + seed)
    out, perm, pos = [], torch.randperm(n, generator=order), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=order), 0
        out.append(perm[pos: pos + batch_size].numpy())
        pos += batch_size
    return out


def load_data(cfg: FinetuneConfig, tokenizer) -> tuple[EvalData, list[EvalData]]:
    train = prepare(cfg.train, tokenizer, cfg.labels, cfg.max_length, cfg.storage_options)
    return train, [prepare(e, tokenizer, cfg.labels, cfg.max_length, cfg.storage_options) for e in cfg.eval_sets]


def model_url(cfg: FinetuneConfig, seed: int, step: int | None = None) -> str:
    url = f"{cfg.output.rstrip('/')}/seed_{seed}"
    return refs.at_step(url, step) if step else url


def exists(cfg: FinetuneConfig, seed: int) -> bool:
    """Whether seed's model is finished: its DONE marker is written last, so a partial upload never counts."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(model_url(cfg, seed), **cfg.storage_options)
    return fs.exists(f"{root}/DONE")


def train(cfg: FinetuneConfig, seed: int, report=None, threads: int | None = None,
          base_name: str | None = None) -> dict:
    """Train copy `seed`, calling report(metrics) as it goes; save it to OUTPUT/seed_k; return final metrics.

    base_name: the base an adapter records (default cfg.base), for callers that rewrote cfg.base to an
    absolute path but want the saved adapter to name the base as the user wrote it."""
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    if threads:
        torch.set_num_threads(threads)
    quiet()
    base = sources.resolve(cfg.base, cfg.cache_dir, cfg.storage_options)
    causal = M.read_info(cfg.base, base, shapes={} if cfg.init == "random" else None).kind == M.CAUSAL_LM
    if causal != (cfg.labels is None):
        raise ConfigError(f"finetune config: base {cfg.base!r} is " + (
            "a causal LM: drop labels (it learns next-token prediction of the train text)" if causal else
            "not a causal LM: give its labels"))
    tok = AutoTokenizer.from_pretrained(str(base))
    train_data, evals = load_data(cfg, tok)
    device = pick_device(cfg.device)
    precision = DTYPES[concrete_dtype(cfg.dtype, device.type == "cuda")]
    torch.manual_seed(seed)  # the new classifier head or adapter (and dropout) draw from this seed, on the CPU
    model = _model(cfg, base, causal, base_name or cfg.base).to(device)
    evaluators = [for_set(d)(
        d, model, device, BATCH_TOKENS.get(device.type, 8192), 256) for d in evals]
    n = len(train_data)
    steps = max(1, math.ceil(cfg.epochs * n / cfg.batch_size))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), steps)
    labels = None if causal else torch.tensor(train_data.labels, device=device)
    report_at = {max(1, round(steps * k / cfg.reports)) for k in range(1, cfg.reports + 1)}
    metrics = {}
    for step, idx in enumerate(batches(n, cfg.batch_size, steps, seed), start=1):
        model.train()
        batch = train_data.pad(idx, device)
        batch.pop("index")
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            logits = model(**batch).logits.float()
        if causal:  # token-weighted over the batch, as the sweep scores a text set; padding predicts nothing
            target = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
            loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100)
        else:
            loss = F.cross_entropy(logits, labels[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step in cfg.save_steps:
            save(model, tok, cfg, seed, step)
        if step in report_at:
            model.eval()
            metrics = {"step": step, "train_loss": loss.item()}
            for spec, d, ev in zip(cfg.eval_sets, evals, evaluators):
                with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
                    m = ev()
                metrics[f"{d.name}/loss"] = float(m[0, LOSS])
                for k, sub in enumerate(d.subsets):
                    prefix = d.name if k == 0 else f"{d.name}/{sub}"
                    for name in spec.metrics:
                        metrics[f"{prefix}/{name}"] = float(m[k, COLUMNS.index(name)])
            if report is not None:
                report(metrics)
    save(model.cpu(), tok, cfg, seed)
    return metrics


def _model(cfg: FinetuneConfig, base: Path, causal: bool, base_name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    head = {} if causal else {"num_labels": len(cfg.labels), "id2label": dict(enumerate(cfg.labels)),
                              "label2id": {lab: i for i, lab in enumerate(cfg.labels)}}
    if cfg.init == "random":
        model = cls.from_config(AutoConfig.from_pretrained(str(base), **head))
    else:
        model = cls.from_pretrained(str(base), **head)
    if cfg.lora is None:
        return model
    import warnings

    from peft import LoraConfig, get_peft_model

    # No dropout: a seed's adapter is then a function of its initial factors and data order alone.
    spec = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, target_modules=cfg.lora.targets, lora_dropout=0.0)
    with warnings.catch_warnings():  # GPT-2's Conv1D layers: PEFT sets fan_in_fan_out itself, and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        model = get_peft_model(model, spec)
    model.peft_config["default"].base_model_name_or_path = base_name  # the reference a sweep resolves, not a cache
    return model


def save(model, tok, cfg: FinetuneConfig, seed: int, step: int | None = None) -> None:
    """HF checkpoint (model + tokenizer; an adapter alone for LoRA) at OUTPUT/seed_k (or the step's
    OUTPUT/seed_k-stepN), with a DONE marker written last."""
    import fsspec

    url = model_url(cfg, seed, step)
    fs, root = fsspec.core.url_to_fs(url, **cfg.storage_options)
    # An adapter never resizes the vocabulary, so it saves no embedding copy; PEFT's "auto" would look the base's
    # recorded name up on disk and on the hub to decide that.
    kw = {"save_embedding_layers": False} if cfg.lora is not None else {}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, **kw)
        tok.save_pretrained(tmp)
        Path(tmp, "DONE").write_text("complete\n")
        if fs.exists(root):
            fs.rm(root, recursive=True)
        files = sorted(os.listdir(tmp), key=lambda f: f == "DONE")
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
            part = root + ".part"
            shutil.rmtree(part, ignore_errors=True)
            shutil.copytree(tmp, part)
            os.replace(part, root)
        else:
            for f in files:  # DONE last: a reader never takes a half-uploaded model for a finished one
                fs.put_file(os.path.join(tmp, f), f"{root}/{f}")


def check(cfg: FinetuneConfig) -> None:
    """What the field types do not say."""
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"finetune config: seeds must be distinct, got {cfg.seeds!r}")
    if cfg.lora is not None and cfg.labels is not None:  # the new head would have to be saved whole beside it
        raise ConfigError("finetune config: lora trains adapters of causal LMs; a classifier (labels) is finetuned "
                          "whole")
    if cfg.lora is not None and cfg.init == "random":
        raise ConfigError("finetune config: lora adapts a trained base; init: random trains every weight from scratch")
    if cfg.train.choices is not None:
        raise ConfigError("finetune config: train: choices make a multiple-choice eval set; the train set is text "
                          "(causal LMs) or labelled examples (classifiers)")


def from_dict(raw: dict) -> FinetuneConfig:
    """A finetune configuration from YAML: `train` and `eval_sets` are written like the sweep's eval sets."""

    raw = dict(raw)
    for key in ("base", "train", "output"):
        if key not in raw:
            raise ConfigError(f"finetune config: missing required key {key!r}")
    raw["train"] = eval_set({"name": "train", "max_examples": None, **raw["train"]}, "train")
    raw["eval_sets"] = [eval_set(e, i) for i, e in enumerate(raw.get("eval_sets") or [])]
    if isinstance(raw.get("lora"), dict):
        raw["lora"] = build(LoraSpec, raw["lora"], "finetune config: lora")
    if isinstance(raw.get("seeds"), int):
        raw["seeds"] = list(range(raw["seeds"]))
    cfg = build(FinetuneConfig, raw, "finetune config")
    check(cfg)
    return cfg
