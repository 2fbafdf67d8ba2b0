"""The chord of a curve: how far a loss curve rises above the straight line between two of its points.

Barrier definitions (analysis/barriers.py) read stored curves with it; adaptive α (`refine`) uses it on a line
being computed, to choose where the next points go.
"""
from __future__ import annotations

import numpy as np


def excess(y: np.ndarray, x: np.ndarray, i: int, j: int) -> np.ndarray:
    """y_k minus the straight line from (x_i, y_i) to (x_j, y_j), for k in [i, j] (along the last axis)."""
    t = (x[i: j + 1] - x[i]) / (x[j] - x[i])
    return y[..., i: j + 1] - ((1 - t) * y[..., i, None] + t * y[..., j, None])


def refine_points(losses: dict[float, float], end_losses: tuple[float, float]) -> list[float]:
    """The next α to evaluate on a line: midpoints either side of the interior point highest above the
    endpoint chord, given the losses evaluated so far (interior α -> loss) and the two endpoint losses."""
    x = np.array(sorted({0.0, 1.0, *losses}))
    y = np.array([end_losses[0] if a == 0.0 else end_losses[1] if a == 1.0 else losses[a] for a in x])
    if not np.isfinite(y).all():
        return []
    k = 1 + int(np.argmax(excess(y, x, 0, len(x) - 1)[1:-1]))
    return [(x[k - 1] + x[k]) / 2, (x[k] + x[k + 1]) / 2]
