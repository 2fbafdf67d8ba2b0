"""Tiny causal-LM populations built from a config, for tests and benchmarks (no hub needed): GPT-2 or
Llama-style models saved with save_pretrained, and LoRA adapters of one of them made with PEFT (the files PEFT
itself writes).

As in population.py, a shared random start plus a seeded perturbation per model stands in for finetunes of one
pretrained model; an adapter's factors are seeded noise, scaled so that its ΔW is a small change of the base.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..training.lm_start import build_tokenizer, gpt2_config


def make_lm_population(out_dir: str | Path, n: int, texts: list[str], layers: int = 2, hidden: int = 32,
                       heads: int = 2, noise: float = 0.02, seed: int = 0, vocab_size: int = 400,
                       positions: int = 128, arch: str = "gpt2") -> list[Path]:
    """n causal LMs (model + tokenizer) under out_dir/m{k}; with n = 0 only the start, under out_dir/base.
    arch: gpt2 (Conv1D layers, tied output), or a Llama-style model_type such as llama, qwen2 or mistral
    (nn.Linear layers, grouped-query attention with one key/value head per two heads, untied output)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = Path(out_dir)
    tok = build_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = gpt2_config(len(tok), layers, hidden, heads, positions)
    else:
        cfg = AutoConfig.for_model(arch, vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=max(1, heads // 2), max_position_embeddings=positions,
                                   bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(cfg).eval()
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
                  scale: float = 0.05, seed: int = 0, tokenizer: bool = False, rslora: bool = False) -> list[Path]:
    """One LoRA adapter of `base` per rank, under out_dir/a{k}, written by PEFT's save_pretrained: adapter k has
    rank ranks[k] on the modules targets[k] (default: attention's c_attn), its factors seeded noise.
    rslora: PEFT's rank-stabilised scale (lora_alpha / √r) instead of lora_alpha / r."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = []
    for k, r in enumerate(ranks):
        model = AutoModelForCausalLM.from_pretrained(str(base))
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=(targets or [["c_attn"]] * len(ranks))[k],
                            fan_in_fan_out=model.config.model_type == "gpt2", lora_dropout=0.0, use_rslora=rslora)
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
