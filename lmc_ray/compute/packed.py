"""Padding-free evaluation of BERT-family classifiers: many examples' tokens in one stream.

Padded batches spend much of their arithmetic on padding (most of it at the paper's 512-token padding; a large
share even in our length-sorted batches on a GPU, where batches must be large: benchmarks/gpu.py prints the
real-token fraction of each technique). Here the examples of a batch are concatenated into one sequence and
attention is restricted to each example's own tokens by a document mask (FlexAttention), so almost every
multiply-add is on a real token. Position ids restart at each example, so the embeddings are those the padded
model sees. As in trim.py, the last layer computes queries, the attention output and the feed-forward block for
each example's first token only: all the head reads.

Shapes are few and fixed. A compiled kernel is specialised to its shapes, and torch stops recompiling after a
few (torch._dynamo.config.recompile_limit, 8), falling back to eager FlexAttention, which materialises the dense
score matrix (~51 GB at 32,768 tokens and 12 heads). So a stream is one of STREAM_SIZES lengths (T, T/2, T/4,
T/8: the tail of a set goes into the smaller ones, so little is padded), filled up with padding tokens, and
its last layer has a fixed number of rows for its length (capacity()). Whatever the size of a set or the number
of sets, a process compiles at most len(stream_sizes(T)) shapes per attention call site (tests/test_packed.py
counts them).

The forward runs on the HF model's own modules (embeddings, projections, LayerNorms, head), so interpolated
weights written in place are used as they are, and the logits equal the HF model's up to float rounding
(tests/test_packed.py). Architectures not listed run the HF forward on padded batches (evaluate.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .data import EvalData
from ..errors import ConfigError
from .trim import FIRST_TOKEN_HEADS

PACKABLE = FIRST_TOKEN_HEADS  # BERT's layer layout, a head that reads position 0
STREAM_SIZES = 4
UNIT = 1024  # T is a multiple of it, so every stream size is a whole number of FlexAttention's 128-token blocks
TOKENS_PER_ROW = 16  # a stream of s tokens holds at most s // 16 examples: its last layer's rows


def supported(model: torch.nn.Module) -> bool:
    cfg = model.config
    return cfg.model_type in PACKABLE and not cfg.is_decoder and not getattr(cfg, "add_cross_attention", False)


def refusal(model_type: str | None) -> ConfigError:
    """`packing: true` on models it cannot pack: the plan says it before anything runs, the core if used directly."""
    return ConfigError(f"config: packing needs a BERT-family encoder ({', '.join(sorted(PACKABLE))}); the models "
                       f"are {model_type!r} (set packing: auto)")


def stream_tokens(batch_tokens: int, datas: list[EvalData]) -> int:
    """T, the longest stream: the token budget, at least the longest example, in whole UNITs. One value for all
    the sets of a process, so that they share their compiled shapes."""
    longest = max((len(x) for d in datas for x in d.input_ids), default=1)
    return -(-max(batch_tokens, longest) // UNIT) * UNIT


def stream_sizes(tokens: int) -> list[int]:
    return [tokens >> k for k in range(STREAM_SIZES)]


def capacity(size: int) -> int:
    return max(1, size // TOKENS_PER_ROW)


def plan_streams(lengths: np.ndarray, tokens: int) -> list[tuple[np.ndarray, int]]:
    """(example indices, stream size) per stream, examples longest first. Each stream is the largest size that
    the examples left can fill (the smallest once they fill none), and takes whole examples, at most its
    capacity, while they fit."""
    sizes = stream_sizes(tokens)
    order = np.argsort(-lengths, kind="stable")
    rest = np.cumsum(lengths[order][::-1])[::-1]  # tokens from each position to the end
    out, start = [], 0
    while start < len(order):
        size = next((s for s in sizes if s <= rest[start]), sizes[-1])
        size = max(size, min(s for s in sizes if s >= lengths[order[start]]))
        stop, total = start + 1, lengths[order[start]]
        while stop < len(order) and stop - start < capacity(size) and total + lengths[order[stop]] <= size:
            total += lengths[order[stop]]
            stop += 1
        out.append((order[start:stop], size))
        start = stop
    return out


def batches(data: EvalData, tokens: int, device: torch.device, position_offset: int) -> list[dict]:
    """The set as streams (plan_streams), each with the document masks its attention needs, built once for the
    whole sweep. Rows past a stream's examples read the last example again and are scored into slot len(data),
    which no metric reads."""
    lengths = np.array([len(x) for x in data.input_ids])
    out = []
    for idx, size in plan_streams(lengths, tokens):
        n, rows = lengths[idx], capacity(size)
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        pad = size - int(n.sum())
        # which example each token is in; -1: padding
        doc = torch.from_numpy(np.append(np.repeat(np.arange(len(idx)), n), np.full(pad, -1))).to(device)
        batch = {
            "input_ids": np.concatenate([data.input_ids[i] for i in idx] + [np.full(pad, data.pad_id)]),
            "position_ids": np.concatenate([np.arange(k) for k in n] + [np.zeros(pad, np.int64)]) + position_offset,
            "first": np.append(starts, np.full(rows - len(idx), starts[-1])),
            "index": np.append(idx, np.full(rows - len(idx), len(data))),
        }
        if data.token_type_ids is not None:
            batch["token_type_ids"] = np.concatenate([data.token_type_ids[i] for i in idx] + [np.zeros(pad)])
        batch = {k: torch.from_numpy(v.astype(np.int64)).to(device) for k, v in batch.items()}
        for k in ("input_ids", "position_ids", "token_type_ids"):
            if k in batch:
                batch[k] = batch[k][None]  # (1, tokens): one sequence
        same, first = _document_masks(doc, batch["first"])
        # Token ids that rise along the stream, one per example and one per padding token: a block of queries
        # may attend a block of keys only where their id ranges meet.
        ids = torch.where(doc >= 0, doc, len(idx) + torch.arange(size, device=device))
        batch["mask"] = _block_mask(same, ids, ids)
        batch["last"] = _block_mask(first, ids[batch["first"]], ids)
        out.append(batch)
    return out


def _document_masks(doc: torch.Tensor, first: torch.Tensor):
    """Mask functions for one stream whose token t belongs to example doc[t] (-1: padding): every layer but the
    last lets a token attend within its own example, and a padding token to itself alone (no row is empty, and
    the padding costs one block of attention per block of tokens, not its square); in the last, query row i is
    the token first[i]."""
    return ((lambda b, h, q, kv: (doc[q] == doc[kv]) & ((doc[q] >= 0) | (q == kv))),
            lambda b, h, q, kv: doc[kv] == doc[first[q]])


def _block_mask(mask_mod, q_ids: torch.Tensor, kv_ids: torch.Tensor, block: int = 128):
    """The BlockMask of `mask_mod`, built from block ranges of non-decreasing ids (O(blocks²) memory) instead of
    evaluating the mask at every (query, key) as create_block_mask does (1 GiB per boolean temporary at 32,768
    tokens). Every block with a pair that may attend is listed; mask_mod decides within it."""
    from torch.nn.attention.flex_attention import BlockMask

    def ranges(ids):
        starts = torch.arange(0, len(ids), block, device=ids.device)
        return ids[starts], ids[(starts + block - 1).clamp(max=len(ids) - 1)]

    (q_lo, q_hi), (kv_lo, kv_hi) = ranges(q_ids), ranges(kv_ids)
    meet = (q_lo[:, None] <= kv_hi[None, :]) & (kv_lo[None, :] <= q_hi[:, None])
    num = meet.sum(-1, dtype=torch.int32)
    indices = torch.argsort((~meet).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # the met blocks first
    return BlockMask.from_kv_blocks(num[None, None], indices[None, None], BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(len(q_ids), len(kv_ids)), compute_q_blocks=False)


def position_offset(model: torch.nn.Module) -> int:
    """RoBERTa-style embeddings count positions from padding_idx + 1; BERT's and ELECTRA's from 0."""
    pad = getattr(model.base_model.embeddings, "padding_idx", None)
    return 0 if pad is None else pad + 1


def _full(q, k, v, block_mask, scale):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


def _last(q, k, v, block_mask, scale):  # its own code object: the recompile limit counts per code object
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


_COMPILED: dict = {}


def _attention(backend):
    """(full layers' attention, last layer's attention), compiled with `backend` once per process: every
    evaluator shares them, so their shapes are compiled once. None: eager FlexAttention (exact, no compiler;
    on a CPU it is a dense reference path)."""
    if backend is None:
        return _full, _last
    if backend not in _COMPILED:
        _COMPILED[backend] = tuple(torch.compile(f, backend=backend, dynamic=False) for f in (_full, _last))
    return _COMPILED[backend]


def fuse_qkv(model: torch.nn.Module) -> None:
    """Make each layer's query, key and value weights views of one (3h, h) matrix, so that the packed forward
    projects with one matmul; the working model's in-place writes land in it, and the HF modules still read
    their own (view) weights."""
    for layer in model.base_model.encoder.layer:
        att = layer.attention.self
        parts = (att.query, att.key, att.value)
        weight = torch.cat([p.weight.detach() for p in parts])
        bias = torch.cat([p.bias.detach() for p in parts])
        h = parts[0].weight.shape[0]
        for i, p in enumerate(parts):
            p.weight = torch.nn.Parameter(weight[i * h:(i + 1) * h], requires_grad=False)
            p.bias = torch.nn.Parameter(bias[i * h:(i + 1) * h], requires_grad=False)
        att.qkv = (weight, bias)


class PackedForward:
    """logits = forward(batch) for one model whose weights may change in place between calls.

    `backend`: the torch.compile backend of the attention (None: eager); `whole`: compile the whole forward with
    it instead; `fused`: one QKV matmul per layer (fuse_qkv)."""

    def __init__(self, model: torch.nn.Module, backend=None, whole: bool = False, fused: bool = False):
        self.model = model
        if fused:
            fuse_qkv(model)
        self.fused = fused
        self.full, self.last = _attention(None if whole else backend)
        self.logits = torch.compile(self._logits, backend=backend, dynamic=False) if whole and backend else self._logits

    def __call__(self, batch: dict) -> torch.Tensor:
        with warnings.catch_warnings():  # the eager (CPU) path warns that it is unfused; it is meant to be
            warnings.simplefilter("ignore", UserWarning)
            return self.logits(batch)

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

            if self.fused:
                weight, bias = att.qkv
                if last:
                    q = att.query(q_in)
                    k, v = F.linear(h, weight[q.shape[-1]:], bias[q.shape[-1]:]).chunk(2, dim=-1)
                else:
                    q, k, v = F.linear(h, weight, bias).chunk(3, dim=-1)
            else:
                q, k, v = att.query(q_in), att.key(h), att.value(h)
            out = (self.last if last else self.full)(heads(q), heads(k), heads(v),
                                                     batch["last" if last else "mask"], att.scaling)
            out = out.transpose(1, 2).reshape(1, q_in.shape[1], -1)
            h = layer.feed_forward_chunk(layer.attention.output(out, q_in))
        first = h.transpose(0, 1)  # (rows, 1, hidden): what the heads read as position 0
        if model.config.model_type == "bert":
            return model.classifier(model.dropout(base.pooler(first)))
        return model.classifier(first)
