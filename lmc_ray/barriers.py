"""Loss (or error) barriers from stored curves; every definition reads the curve, none needs a new sweep."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _chord_excess(y: np.ndarray, x: np.ndarray, i: int, j: int) -> np.ndarray:
    """y_k minus the straight line from (x_i, y_i) to (x_j, y_j), for k in [i, j]."""
    t = (x[i: j + 1] - x[i]) / (x[j] - x[i])
    return y[i: j + 1] - ((1 - t) * y[i] + t * y[j])


def paper(y, x=None) -> float:
    """Juneja et al.: the largest rise above the chord of any contiguous sub-segment, clipped at 0."""
    y, x = _xy(y, x)
    if not np.isfinite(y).all():  # NaN or inf losses along the line: no barrier to speak of
        return float("nan")
    n = len(y)
    best = max((_chord_excess(y, x, i, j).max() for i in range(n) for j in range(i + 1, n)), default=0.0)
    return max(0.0, float(best))


def endpoint_chord(y, x=None) -> float:
    """The same rise, measured only above the chord joining the two ends of the line, clipped at 0."""
    y, x = _xy(y, x)
    if not np.isfinite(y).all():  # NaN or inf losses along the line: no barrier to speak of
        return float("nan")
    return max(0.0, float(_chord_excess(y, x, 0, len(y) - 1).max()))


def midpoint(y, x=None) -> float:
    """Git Re-Basin's: max_α L(α) − ½(L_0 + L_1)."""
    y, _ = _xy(y, x)
    return float(np.max(y) - 0.5 * (y[0] + y[-1]))  # NaN propagates


def area(y, x=None) -> float:
    """Signed area between the curve and the endpoint chord (negative for a convex dip)."""
    y, x = _xy(y, x)
    d = _chord_excess(y, x, 0, len(y) - 1)
    return float(np.sum((d[1:] + d[:-1]) / 2 * np.diff(x)))


def refine_points(losses: dict[float, float], end_losses: tuple[float, float]) -> list[float]:
    """The next α to evaluate on a line: midpoints either side of the interior point highest above the
    endpoint chord, given the losses evaluated so far (interior α -> loss) and the two endpoint losses."""
    x = np.array(sorted({0.0, 1.0, *losses}))
    y = np.array([end_losses[0] if a == 0.0 else end_losses[1] if a == 1.0 else losses[a] for a in x])
    if not np.isfinite(y).all():
        return []
    k = 1 + int(np.argmax(_chord_excess(y, x, 0, len(x) - 1)[1:-1]))
    return [(x[k - 1] + x[k]) / 2, (x[k] + x[k + 1]) / 2]


DEFINITIONS = {"barrier": paper, "endpoint_barrier": endpoint_chord, "midpoint_barrier": midpoint, "area": area}


def _xy(y, x):
    y = np.asarray(y, dtype=np.float64)
    x = np.linspace(0, 1, len(y)) if x is None else np.asarray(x, dtype=np.float64)
    return y, x


def table(curves: pd.DataFrame, subset: str = "all") -> pd.DataFrame:
    """One row per (pair, eval set, metric) with every barrier definition as a column."""
    df = curves[curves.subset == subset].assign(error=lambda d: 1.0 - d.accuracy).sort_values("alpha")
    rows = []
    for (a, b, s), g in df.groupby(["model_a", "model_b", "eval_set"], sort=True):
        for metric, col in (("loss", "loss"), ("error", "error")):
            y, x = g[col].to_numpy(), g.alpha.to_numpy()
            rows.append({"model_a": a, "model_b": b, "eval_set": s, "metric": metric,
                         **{name: f(y, x) for name, f in DEFINITIONS.items()}})
    return pd.DataFrame(rows)
