"""Mean cross-entropy, accuracy, F1 and MCC of a model on an evaluation set, overall and per subset."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .data import EvalData

# One row per subset, columns metrics.COLUMNS.
Metrics = np.ndarray
# Per example, in the eval set's order: row 0 the cross-entropy, row 1 1.0 if predicted right (float32).
Examples = np.ndarray


class Evaluator:
    """An evaluation set with its batches already on the device, reused for every model and α."""

    def __init__(self, data: EvalData, device, batch_tokens: int, max_batch_size: int):
        self.data = data
        self.batches = data.batches(batch_tokens, max_batch_size, device)
        self.labels = torch.tensor(data.labels, device=device)
        self.membership = torch.tensor(data.membership, device=device, dtype=torch.float64)
        self.classes = [torch.tensor(c, device=device) for c in data.classes] if data.pooled() else None
        self.examples: Examples | None = None  # the latest call's, for bootstrap intervals


    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module) -> Metrics:
        n = len(self.data)
        losses = torch.empty(n, dtype=torch.float64, device=self.labels.device)
        predicted = torch.empty(n, dtype=torch.long, device=self.labels.device)
        for batch in self.batches:
            idx = batch["index"]
            logits = model(**{k: v for k, v in batch.items() if k != "index"}).logits.float()
            if self.classes is not None:  # e.g. HANS: non-entailment = max(neutral, contradiction)
                logits = torch.stack([logits[:, c].amax(-1) for c in self.classes], dim=-1)
            y = self.labels[idx]
            losses[idx] = F.cross_entropy(logits, y, reduction="none").double()
            predicted[idx] = logits.argmax(-1)
        counts = self.membership.sum(1)
        k = len(self.data.classes)
        pairs = F.one_hot(self.labels * k + predicted, k * k).double()  # (true, predicted) per example
        conf = (self.membership @ pairs).view(-1, k, k).cpu().numpy()
        acc = np.trace(conf, axis1=1, axis2=2) / conf.sum((1, 2))
        loss = (self.membership @ losses / counts).cpu().numpy()
        self.examples = torch.stack([losses, (predicted == self.labels).double()]).float().cpu().numpy()
        return np.stack([counts.cpu().numpy(), loss, acc, metrics.f1(conf), metrics.mcc(conf)], 1)
