"""Classification metrics from confusion matrices, so one batched pass serves every subset.

Definitions follow scikit-learn: F1 is the positive class's (class 1) for two classes and the macro
average over the classes present otherwise; MCC is the multi-class Matthews correlation.
"""
from __future__ import annotations

import numpy as np

from ..config.sweep import METRICS

# Per subset, in this order: how many examples, mean cross-entropy, then the scores.
COLUMNS = ("n_examples", "loss", *METRICS)
LOSS = COLUMNS.index("loss")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def f1(conf: np.ndarray) -> np.ndarray:
    """conf[..., true, predicted] counts -> F1 per leading index."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    per_class = _ratio(2 * tp, conf.sum(-1) + conf.sum(-2))
    if conf.shape[-1] == 2:
        return per_class[..., 1]
    present = (conf.sum(-1) + conf.sum(-2)) > 0
    return _ratio((per_class * present).sum(-1), present.sum(-1).astype(np.float64))


def mcc(conf: np.ndarray) -> np.ndarray:
    conf = np.asarray(conf, dtype=np.float64)
    t, p = conf.sum(-1), conf.sum(-2)
    s = conf.sum((-2, -1))
    c = np.trace(conf, axis1=-2, axis2=-1)
    cov = c * s - (t * p).sum(-1)
    den = np.sqrt((s ** 2 - (p * p).sum(-1)) * (s ** 2 - (t * t).sum(-1)))
    return _ratio(cov, den)
