"""Small BERT classifier populations built from a config, for tests and benchmarks (no hub needed).

A shared random base plus a seeded perturbation per model stands in for "N finetunes of one
pretrained start": the models are distinct but close, as real finetuned copies are.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(texts: list[str], vocab_size: int = 2000):
    """A WordPiece tokenizer whose vocabulary is the most frequent words (and characters) of `texts`."""
    from transformers import BertTokenizerFast

    words = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIALS + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in words.most_common() if w not in vocab][: max(0, vocab_size - len(vocab))]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def bert_config(vocab_size: int, labels: list[str], layers: int = 2, hidden: int = 64, heads: int = 2,
                max_positions: int = 512, dropout: float = 0.1):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=4 * hidden, max_position_embeddings=max_positions,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={lab: i for i, lab in enumerate(labels)})


def make_population(out_dir: str | Path, n: int, texts: list[str], labels: list[str], layers: int = 2,
                    hidden: int = 64, heads: int = 2, noise: float = 0.02, seed: int = 0,
                    vocab_size: int = 2000) -> list[Path]:
    """n classifiers saved with save_pretrained (model + tokenizer) under out_dir/m{k}."""
    from transformers import BertForSequenceClassification

    out = Path(out_dir)
    tok = build_tokenizer(texts, vocab_size)
    cfg = bert_config(len(tok), labels, layers, hidden, heads)
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
