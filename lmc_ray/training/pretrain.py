"""The demo's pretrained start: a small BERT trained briefly on the built-in corpus to match words across sentences.

Cached by its settings, so every finetuned copy shares one start (the paper's setting) and a second
demo run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


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


@dataclass
class PretrainConfig:
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    objective: str = "word_matching"  # part of the cache key: a base built another way is never reused


def in_premise(ids: torch.Tensor, token_types: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each hypothesis token (segment B, not special): does the same token occur in its premise?
    Returns (which positions are hypothesis tokens, the 0/1 answer per position)."""
    words = ~torch.isin(ids, special)
    hyp, prem = (token_types == 1) & words, (token_types == 0) & words
    found = ((ids.unsqueeze(2) == ids.unsqueeze(1)) & prem.unsqueeze(1)).any(2)
    return hyp, found.long()


def build(pairs: list[tuple[str, str]], cfg: PretrainConfig, out_dir: Path, progress: bool = True) -> Path:
    """Self-supervised cross-sentence word matching (replaced-token detection across segments): half the
    hypothesis tokens are swapped for random corpus words, and every hypothesis token is classified as
    occurring in the premise or not. It gives the start the word matching a real pretrained BERT brings to
    NLI — a lexical-overlap prior — without NLI labels; masked-LM did not teach it within minutes here."""
    from transformers import BertModel, get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    tok = build_tokenizer([t for p in pairs for t in p], vocab_size=4000)
    model = BertModel(bert_config(len(tok), ["entailment", "non-entailment"], cfg.layers, cfg.hidden, cfg.heads,
                                  max_positions=64, dropout=0.0), add_pooling_layer=False)
    head = torch.nn.Linear(cfg.hidden, 2)  # the detector; only the encoder is kept
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=64)
    enc = [{"input_ids": i, "token_type_ids": t} for i, t in zip(enc["input_ids"], enc["token_type_ids"])]
    special = torch.tensor(tok.all_special_ids)
    words = torch.tensor(sorted({i for e in enc for i in e["input_ids"]} - set(tok.all_special_ids)))
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, cfg.steps // 10, max(1, cfg.steps))
    g = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in tqdm(range(cfg.steps), desc="pretrain base (word matching)", disable=not progress):
        idx = torch.randint(len(enc), (cfg.batch_size,), generator=g)
        batch = tok.pad([enc[i] for i in idx], return_tensors="pt")
        ids, types = batch["input_ids"], batch["token_type_ids"]
        replace = (types == 1) & ~torch.isin(ids, special) & (torch.rand(ids.shape, generator=g) < 0.5)
        ids = torch.where(replace, words[torch.randint(len(words), ids.shape, generator=g)], ids)
        hyp, found = in_premise(ids, types, special)
        out = model(input_ids=ids, attention_mask=batch["attention_mask"], token_type_ids=types).last_hidden_state
        loss = F.cross_entropy(head(out)[hyp], found[hyp])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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
