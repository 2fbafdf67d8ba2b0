"""The demo's pretrained start: a small BERT trained briefly with masked-LM on the built-in corpus.

Cached by its settings, so every finetuned copy shares one start (the paper's setting) and a second
demo run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


@dataclass
class PretrainConfig:
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    data_seed: int = 0


def build(pairs: list[tuple[str, str]], cfg: PretrainConfig, out_dir: Path, progress: bool = True) -> Path:
    """Masked-LM on sentence pairs: predicting a masked hypothesis word from the premise teaches the
    cross-sentence word matching a real pretrained BERT brings to NLI finetuning."""
    from transformers import BertForMaskedLM, get_linear_schedule_with_warmup

    from .synthetic import bert_config, build_tokenizer

    torch.manual_seed(cfg.seed)
    tok = build_tokenizer([t for p in pairs for t in p], vocab_size=4000)
    model = BertForMaskedLM(bert_config(len(tok), ["entailment", "non-entailment"], cfg.layers, cfg.hidden,
                                        cfg.heads, max_positions=64, dropout=0.0))
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=64)
    enc = [{"input_ids": i, "token_type_ids": t} for i, t in zip(enc["input_ids"], enc["token_type_ids"])]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, cfg.steps // 10, max(1, cfg.steps))
    g = torch.Generator().manual_seed(cfg.seed)
    special = torch.tensor(tok.all_special_ids)
    model.train()
    for _ in tqdm(range(cfg.steps), desc="pretrain base (masked LM)", disable=not progress):
        idx = torch.randint(len(enc), (cfg.batch_size,), generator=g)
        batch = tok.pad([enc[i] for i in idx], return_tensors="pt")
        ids = batch["input_ids"]
        maskable = ~torch.isin(ids, special)
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & maskable
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        inputs = torch.where(chosen, torch.full_like(ids, tok.mask_token_id), ids)
        loss = model(input_ids=inputs, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
                     labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    tmp = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir


def cached_base(pairs: list[tuple[str, str]], cfg: PretrainConfig, cache_dir: str, progress: bool = True) -> Path:
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    out = Path(os.path.expanduser(cache_dir)) / "base" / f"toybert-{key}"
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return build(pairs, cfg, out, progress)
