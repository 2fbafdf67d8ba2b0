"""Mean cross-entropy, accuracy, F1 and MCC of a classifier on an evaluation set, overall and per subset; for a
causal LM on a text set, token-weighted next-token cross-entropy and accuracy, and on a multiple-choice set, the
choices' log-likelihoods.

The device does the counting: each evaluation leaves one small tensor per set (per subset, the loss sum and the
confusion matrix) on the device, and the caller copies many of them to the host at once (core.py: one copy per
pair, all α), instead of several synchronising copies per α. On a GPU the whole pass over a set can be recorded
once as a CUDA graph and replayed (its batches never change, and the working model's weights are overwritten in
place), so a replay costs one launch instead of thousands.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics, packed
from .data import EvalData
from ..errors import first_line

log = logging.getLogger("lmc_ray")

# One row per subset, columns metrics.COLUMNS.
Metrics = np.ndarray
# Per example, in the eval set's order: row 0 the cross-entropy, row 1 1.0 if predicted right (float32).
Examples = np.ndarray


class Evaluator:
    """An evaluation set with its batches already on the device, evaluated on one model whose weights change."""

    def __init__(self, data: EvalData, model: torch.nn.Module, device, batch_tokens: int, max_batch_size: int,
                 packed_forward: packed.PackedForward | None = None, graphs: bool = False):
        """With `packed_forward`, the set is evaluated in streams of at most `batch_tokens` (packed.stream_tokens);
        otherwise in padded batches."""
        device = torch.device(device)
        self.data, self.model = data, model
        if packed_forward is not None:
            self.forward = packed_forward
            self.batches = packed.batches(data, batch_tokens, device, packed.position_offset(model))
        else:
            self.forward = lambda batch: model(**{k: v for k, v in batch.items() if k != "index"}).logits
            self.batches = data.batches(batch_tokens, max_batch_size, device)
        # One slot past the set: where a packed stream's spare rows are scored, read by no metric.
        self.labels = torch.tensor(np.append(data.labels, 0), device=device)
        self.membership = torch.tensor(data.membership, device=device, dtype=torch.float64)
        self.counts = data.membership.sum(1).astype(np.float64)
        self.classes = [torch.tensor(c, device=device) for c in data.classes] if data.pooled() else None
        self.losses = torch.zeros(len(data) + 1, dtype=torch.float64, device=device)
        self.predicted = torch.zeros(len(data) + 1, dtype=torch.long, device=device)
        self.summary = Replay(self._summary) if graphs and device.type == "cuda" else self._summary

    @torch.inference_mode()
    def _summary(self) -> torch.Tensor:
        """(subsets, 1 + k²) on the device: the loss sum, then the (true, predicted) counts. No host sync."""
        for batch in self.batches:
            idx = batch["index"]
            logits = self.forward(batch).float()
            if self.classes is not None:  # e.g. HANS: non-entailment = max(neutral, contradiction)
                logits = torch.stack([logits[:, c].amax(-1) for c in self.classes], dim=-1)
            self.losses[idx] = F.cross_entropy(logits, self.labels[idx], reduction="none").double()
            self.predicted[idx] = logits.argmax(-1)
        k, n = len(self.data.classes), len(self.data)
        pairs = F.one_hot(self.labels[:n] * k + self.predicted[:n], k * k).double()
        return torch.cat([self.membership @ self.losses[:n, None], self.membership @ pairs], 1)

    def per_example(self) -> torch.Tensor:
        """(2, n) on the device, after a summary: each example's loss and whether it was predicted right."""
        n = len(self.data)
        return torch.stack([self.losses[:n], (self.predicted[:n] == self.labels[:n]).double()]).float()

    @property
    def width(self) -> int:
        """Columns of a summary row."""
        return 1 + len(self.data.classes) ** 2

    def metrics(self, summary: np.ndarray) -> Metrics:
        k = len(self.data.classes)
        conf = summary[:, 1:].reshape(-1, k, k)
        acc = np.trace(conf, axis1=1, axis2=2) / conf.sum((1, 2))
        return np.stack([self.counts, summary[:, 0] / self.counts, acc, metrics.f1(conf), metrics.mcc(conf)], 1)

    def __call__(self) -> Metrics:
        """The model's metrics now (one host copy)."""
        return self.metrics(self.summary().cpu().numpy())


class TokenEvaluator(Evaluator):
    """A text set on a causal LM: next-token prediction. Every token after a text's first is predicted from those
    before it; `loss` is the token-weighted mean cross-entropy over the set (Σ CE / Σ predicted tokens, the
    log-perplexity) and `accuracy` the share of tokens whose top-1 prediction is right, per subset alike. F1 and
    MCC are classification scores and stay NaN. Batches are the same length-sorted, right-padded ones."""

    def __init__(self, data: EvalData, model: torch.nn.Module, device, batch_tokens: int, max_batch_size: int,
                 packed_forward: packed.PackedForward | None = None, graphs: bool = False):
        device = torch.device(device)
        self.data, self.model = data, model
        self.forward = lambda batch: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        self.batches = data.batches(batch_tokens, max_batch_size, device)
        tokens = np.array([len(x) - 1 for x in data.input_ids], dtype=np.float64)
        self.tokens = torch.tensor(tokens, device=device)
        self.membership = torch.tensor(data.membership, device=device, dtype=torch.float64)
        self.counts = data.membership.sum(1).astype(np.float64)
        self.losses = torch.zeros(len(data), dtype=torch.float64, device=device)  # per text: Σ CE of its tokens
        self.correct = torch.zeros(len(data), dtype=torch.float64, device=device)
        self.summary = Replay(self._summary) if graphs and device.type == "cuda" else self._summary

    @property
    def width(self) -> int:
        return 3

    @torch.inference_mode()
    def _summary(self) -> torch.Tensor:
        """(subsets, 3) on the device: Σ CE, Σ predicted tokens, Σ right top-1 predictions. No host sync."""
        for batch in self.batches:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits = self.forward(batch)[:, :-1].float()
            target, real = ids[:, 1:], mask[:, 1:].bool()
            ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            self.losses[batch["index"]] = torch.where(real, ce, 0.0).sum(1).double()
            self.correct[batch["index"]] = ((logits.argmax(-1) == target) & real).sum(1).double()
        return self.membership @ torch.stack([self.losses, self.tokens, self.correct], 1)

    def per_example(self) -> torch.Tensor:
        """(2, n): each text's mean CE per predicted token and its share of right predictions."""
        t = self.tokens.clamp(min=1)
        return torch.stack([self.losses / t, self.correct / t]).float()

    def metrics(self, summary: np.ndarray) -> Metrics:
        nan = np.full(len(summary), np.nan)
        return np.stack([self.counts, summary[:, 0] / summary[:, 1], summary[:, 2] / summary[:, 1], nan, nan], 1)


class ChoiceEvaluator(TokenEvaluator):
    """A multiple-choice set on a causal LM, scored as lm-evaluation-harness scores `acc`: each choice's summed
    log-likelihood of its tokens after the context; per item, `loss` is the cross-entropy of the answer under the
    softmax of its choices' log-likelihoods and `accuracy` whether the most likely choice is the answer, averaged
    over items. The sequences (one per item and choice) are batched as text sets are."""

    def __init__(self, data: EvalData, model: torch.nn.Module, device, batch_tokens: int, max_batch_size: int,
                 packed_forward: packed.PackedForward | None = None, graphs: bool = False):
        super().__init__(data, model, device, batch_tokens, max_batch_size, packed_forward, graphs)
        device = torch.device(device)
        items, slot = data.choice.T
        n, k = len(data.labels), int(slot.max()) + 1
        self.cells = torch.tensor(items * k + slot, device=device)  # each sequence's place in the (item, choice) table
        self.unused = torch.ones(n * k, dtype=torch.bool, device=device)
        self.unused[self.cells] = False  # items with fewer choices than the most: never chosen
        self.context = torch.tensor(data.context, device=device)
        self.labels = torch.tensor(data.labels, device=device)
        self.shape = (n, k)
        self.ll = torch.zeros(len(data), dtype=torch.float64, device=device)
        self.tokens = torch.ones(n, dtype=torch.float64, device=device)  # each item weighs one
        self.losses = torch.zeros(n, dtype=torch.float64, device=device)
        self.correct = torch.zeros(n, dtype=torch.float64, device=device)

    @torch.inference_mode()
    def _summary(self) -> torch.Tensor:
        """(subsets, 3) on the device: Σ item loss, items, Σ items right. No host sync."""
        for batch in self.batches:
            ids, mask, idx = batch["input_ids"], batch["attention_mask"], batch["index"]
            logits = self.forward(batch)[:, :-1].float()
            ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            position = torch.arange(1, ids.shape[1], device=ids.device)  # of the token each logit predicts
            scored = mask[:, 1:].bool() & (position >= self.context[idx][:, None])
            self.ll[idx] = -torch.where(scored, ce, 0.0).sum(1).double()
        table = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.float64, device=self.ll.device)
        table = table.index_copy(0, self.cells, self.ll).masked_fill(self.unused, -torch.inf).view(self.shape)
        self.losses.copy_(F.cross_entropy(table, self.labels, reduction="none"))
        self.correct.copy_((table.argmax(-1) == self.labels).double())
        return self.membership @ torch.stack([self.losses, self.tokens, self.correct], 1)

    def per_example(self) -> torch.Tensor:
        """(2, items): each item's loss and whether its most likely choice is the answer."""
        return torch.stack([self.losses, self.correct]).float()


def for_set(data: EvalData) -> type[Evaluator]:
    """The evaluator a set is scored by: a classifier's, a text set's, or a multiple-choice set's."""
    if data.choice is not None:
        return ChoiceEvaluator
    return TokenEvaluator if data.labels is None else Evaluator


class Replay:
    """fn() recorded once as a CUDA graph, then replayed; its output tensor is the same each time (copy it
    before the next replay). If recording fails (an operation that synchronises with the host), fn runs as is."""

    def __init__(self, fn):
        self.fn, self.graph, self.out = fn, None, None
        self.failure: str | None = None  # why recording failed (benchmarks/gpu.py prints it)

    def __call__(self) -> torch.Tensor:
        if self.graph is None:
            try:
                self._record()
            except RuntimeError as e:
                self.failure = first_line(e)
                log.warning("CUDA graph recording failed, evaluating without it: %s", self.failure)
                torch.cuda.synchronize()
                self.graph = False
        if self.graph is False:
            return self.fn()
        self.graph.replay()
        return self.out

    def _record(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the recording: lazy initialisation, kernel selection
            self.fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self.fn()
        self.graph = graph
