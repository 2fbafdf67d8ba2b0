"""Padding-free evaluation of BERT-family classifiers: every example's tokens in one stream.

Padded batches spend much of their arithmetic on padding (most of it at the paper's 512-token padding; a large
share even in our length-sorted batches on a GPU, where batches must be large: benchmarks/gpu.py prints the
real-token fraction of each technique). Here the examples of a batch are
concatenated into one sequence and attention is restricted to each example's own tokens by a document mask
(FlexAttention), so every multiply-add is on a real token. Position ids restart at each example, so the
embeddings are those the padded model sees. As in trim.py, the last layer computes queries, the attention
output and the feed-forward block for each example's first token only: all the head reads.

The forward runs on the HF model's own modules (embeddings, projections, LayerNorms, head), so interpolated
weights written in place are used as they are, and the logits equal the HF model's up to float rounding
(tests/test_packed.py). Architectures not listed run the HF forward on padded batches (evaluate.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .data import EvalData
from ..errors import ConfigError
from .trim import FIRST_TOKEN_HEADS

PACKABLE = FIRST_TOKEN_HEADS  # BERT's layer layout, a head that reads position 0


def supported(model: torch.nn.Module) -> bool:
    cfg = model.config
    return cfg.model_type in PACKABLE and not cfg.is_decoder and not getattr(cfg, "add_cross_attention", False)


def refusal(model_type: str | None) -> ConfigError:
    """`packing: true` on models it cannot pack: the plan says it before anything runs, the core if used directly."""
    return ConfigError(f"config: packing needs a BERT-family encoder ({', '.join(sorted(PACKABLE))}); the models "
                       f"are {model_type!r} (set packing: auto)")


def _attention(device: torch.device):
    from torch.nn.attention.flex_attention import flex_attention

    # On a GPU, eager FlexAttention is a slow reference path; compiled, it is a fused kernel that skips the
    # masked-out blocks. On a CPU the eager path is exact and needs no compiler start-up.
    return torch.compile(flex_attention, dynamic=False) if device.type == "cuda" else flex_attention


def batches(data: EvalData, batch_tokens: int, device: torch.device, position_offset: int) -> list[dict]:
    """Length-sorted examples, cut into streams of at most `batch_tokens` real tokens (one example at least),
    each with the document masks its attention needs, built once for the whole sweep."""
    from torch.nn.attention.flex_attention import create_block_mask

    lengths = np.array([len(x) for x in data.input_ids])
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    while start < len(order):
        stop, total = start + 1, lengths[order[start]]
        while stop < len(order) and total + lengths[order[stop]] <= batch_tokens:
            total += lengths[order[stop]]
            stop += 1
        idx = order[start:stop]
        n = lengths[idx]
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        total = int(total)
        doc = torch.from_numpy(np.repeat(np.arange(len(idx)), n)).to(device)  # which example each token is in
        batch = {
            "input_ids": torch.from_numpy(np.concatenate([data.input_ids[i] for i in idx]).astype(np.int64)),
            "position_ids": torch.from_numpy(np.concatenate([np.arange(k) for k in n]) + position_offset),
            "first": torch.from_numpy(starts.astype(np.int64)),
            "index": torch.from_numpy(idx.astype(np.int64)),
        }
        if data.token_type_ids is not None:
            batch["token_type_ids"] = torch.from_numpy(np.concatenate([data.token_type_ids[i] for i in idx]).astype(np.int64))
        batch = {k: v.to(device) for k, v in batch.items()}
        for k in ("input_ids", "position_ids", "token_type_ids"):
            if k in batch:
                batch[k] = batch[k][None]  # (1, tokens): one sequence
        same, first = _document_masks(doc)
        batch["mask"] = create_block_mask(same, None, None, total, total, device=device)
        batch["last"] = create_block_mask(first, None, None, len(idx), total, device=device)
        out.append(batch)
        start = stop
    return out


def _document_masks(doc: torch.Tensor):
    """Mask functions for one stream whose token t belongs to example doc[t]: every layer but the last lets a
    token attend within its own example; in the last, query i is example i's first token."""
    last = len(doc) - 1

    def at(i):
        # FlexAttention may ask about positions past the stream (it works in whole blocks): clamped, they
        # read the last token's example, and their rows and columns are never used.
        return doc[i.clamp(max=last)]

    return (lambda b, h, q, kv: at(q) == at(kv)), (lambda b, h, q, kv: at(kv) == q)


def position_offset(model: torch.nn.Module) -> int:
    """RoBERTa-style embeddings count positions from padding_idx + 1; BERT's and ELECTRA's from 0."""
    pad = getattr(model.base_model.embeddings, "padding_idx", None)
    return 0 if pad is None else pad + 1


class PackedForward:
    """logits = forward(batch) for one model whose weights may change in place between calls."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model = model
        self.attend = _attention(device)

    def __call__(self, batch: dict) -> torch.Tensor:
        with warnings.catch_warnings():  # the eager (CPU) path warns that it is unfused; it is meant to be
            warnings.simplefilter("ignore", UserWarning)
            return self._logits(batch)

    def _logits(self, batch: dict) -> torch.Tensor:
        model, base = self.model, self.model.base_model
        h = base.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"),
                            position_ids=batch["position_ids"])
        if hasattr(base, "embeddings_project"):  # ELECTRA with embedding_size != hidden_size
            h = base.embeddings_project(h)
        layers = base.encoder.layer
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            att = layer.attention.self
            q_in = h[:, batch["first"]] if last else h

            def heads(x):
                return x.view(1, x.shape[1], -1, att.attention_head_size).transpose(1, 2)

            out = self.attend(heads(att.query(q_in)), heads(att.key(h)), heads(att.value(h)),
                              block_mask=batch["last" if last else "mask"], scale=att.scaling)
            out = out.transpose(1, 2).reshape(1, q_in.shape[1], -1)
            h = layer.feed_forward_chunk(layer.attention.output(out, q_in))
        first = h.transpose(0, 1)  # (examples, 1, hidden): what the heads read as position 0
        if model.config.model_type == "bert":
            return model.classifier(model.dropout(base.pooler(first)))
        return model.classifier(first)
