"""Tiny causal-LM populations built from a config, for tests and benchmarks (no hub needed): GPT-2 models saved
with save_pretrained, and LoRA adapters of one of them made with PEFT (the files PEFT itself writes).

As in population.py, a shared random start plus a seeded perturbation per model stands in for finetunes of one
pretrained model; an adapter's factors are seeded noise, scaled so that its ΔW is a small change of the base.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..training.lm_start import build_tokenizer, gpt2_config


def make_lm_population(out_dir: str | Path, n: int, texts: list[str], layers: int = 2, hidden: int = 32,
                       heads: int = 2, noise: float = 0.02, seed: int = 0, vocab_size: int = 400,
                       positions: int = 128) -> list[Path]:
    """n GPT-2 models (model + tokenizer) under out_dir/m{k}; with n = 0 only the start, under out_dir/base."""
    from transformers import GPT2LMHeadModel

    out = Path(out_dir)
    tok = build_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config(len(tok), layers, hidden, heads, positions)).eval()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    paths = []
    for k in range(n) if n else [None]:
        if k is not None:
            g = torch.Generator().manual_seed(seed * 1000 + k + 1)
            model.load_state_dict({name: v + noise * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                                   for name, v in start.items()})
        path = out / (f"m{k}" if k is not None else "base")
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(path)
    return paths


def make_adapters(base: str | Path, out_dir: str | Path, ranks: list[int], targets: list[list[str]] | None = None,
                  scale: float = 0.05, seed: int = 0, tokenizer: bool = False) -> list[Path]:
    """One LoRA adapter of `base` per rank, under out_dir/a{k}, written by PEFT's save_pretrained: adapter k has
    rank ranks[k] on the modules targets[k] (default: attention's c_attn), its factors seeded noise."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = []
    for k, r in enumerate(ranks):
        model = AutoModelForCausalLM.from_pretrained(str(base))
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=(targets or [["c_attn"]] * len(ranks))[k],
                            fan_in_fan_out=True, lora_dropout=0.0)
        peft_model = get_peft_model(model, config)
        g = torch.Generator().manual_seed(seed * 1000 + k + 1)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.copy_(scale * torch.randn(p.shape, generator=g))
        path = Path(out_dir) / f"a{k}"
        peft_model.save_pretrained(path)
        if tokenizer:
            AutoTokenizer.from_pretrained(str(base)).save_pretrained(path)
        paths.append(path)
    return paths
