"""Small BERT classifier populations built from a config, for tests and benchmarks (no hub needed).

A shared random base plus a seeded perturbation per model stands in for "N finetunes of one
pretrained start": the models are distinct but close, as real finetuned copies are.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..training.pretrain import bert_config, build_tokenizer


def make_population(out_dir: str | Path, n: int, texts: list[str], labels: list[str], layers: int = 2,
                    hidden: int = 64, heads: int = 2, noise: float = 0.02, seed: int = 0,
                    vocab_size: int = 2000, positions: int = 512) -> list[Path]:
    """n classifiers saved with save_pretrained (model + tokenizer) under out_dir/m{k}."""
    from transformers import BertForSequenceClassification

    out = Path(out_dir)
    tok = build_tokenizer(texts, vocab_size)
    cfg = bert_config(len(tok), labels, layers, hidden, heads, max_positions=positions)
    torch.manual_seed(seed)
    base = BertForSequenceClassification(cfg).eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    paths = []
    for k in range(n):
        g = torch.Generator().manual_seed(seed * 1000 + k + 1)
        state = {name: v + noise * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                 for name, v in base_state.items()}
        base.load_state_dict(state)
        path = out / f"m{k}"
        base.save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(path)
    return paths
