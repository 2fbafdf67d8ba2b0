"""Loss (or error) barriers from stored curves; every definition reads the curve, none needs a new sweep."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..compute import chord


def _scalar(v: np.ndarray):
    return float(v) if np.ndim(v) == 0 else v


def _clipped(rise: np.ndarray, y: np.ndarray):
    """The rise clipped at 0; NaN for a curve with NaN or inf losses (no barrier to speak of)."""
    return _scalar(np.where(np.isfinite(y).all(-1), np.maximum(0.0, rise), np.nan))


# Every definition takes one curve y[α] or a stack of curves y[..., α] (bootstrap replicates). Curves
# with inf losses give NaN without a warning: the report names those pairs instead.
@np.errstate(invalid="ignore")
def paper(y, x=None):
    """Juneja et al.: the largest rise above the chord of any contiguous sub-segment, clipped at 0."""
    y, x = _xy(y, x)
    n = y.shape[-1]
    return _clipped(np.max([chord.excess(y, x, i, j).max(-1) for i in range(n) for j in range(i + 1, n)], 0), y)


@np.errstate(invalid="ignore")
def endpoint_chord(y, x=None):
    """The same rise, measured only above the chord joining the two ends of the line, clipped at 0."""
    y, x = _xy(y, x)
    return _clipped(chord.excess(y, x, 0, y.shape[-1] - 1).max(-1), y)


@np.errstate(invalid="ignore")
def midpoint(y, x=None):
    """Git Re-Basin's: max_α L(α) − ½(L_0 + L_1)."""
    y, _ = _xy(y, x)
    return _scalar(np.max(y, -1) - 0.5 * (y[..., 0] + y[..., -1]))  # NaN propagates


@np.errstate(invalid="ignore")
def area(y, x=None):
    """Signed area between the curve and the endpoint chord (negative for a convex dip)."""
    y, x = _xy(y, x)
    d = chord.excess(y, x, 0, y.shape[-1] - 1)
    return _scalar(np.sum((d[..., 1:] + d[..., :-1]) / 2 * np.diff(x), -1))


def resample(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of n examples as counts [n_boot, n]: how often each example is drawn."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def interval(values: np.ndarray, x, counts: np.ndarray, level: float = 0.95, definition=paper) -> tuple[float, float]:
    """Percentile bootstrap interval of a barrier, from per-example values [α, example]. The same draw of
    examples serves every α (a paired bootstrap): the line is evaluated on the same examples throughout."""
    curves = counts @ np.asarray(values, dtype=np.float64).T / counts.shape[1]
    replicates = definition(curves, x)
    if np.isnan(replicates).all():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


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
        distance = g.distance.iloc[0] if "distance" in g else float("nan")
        for metric, col in (("loss", "loss"), ("error", "error")):
            y, x = g[col].to_numpy(), g.alpha.to_numpy()
            rows.append({"model_a": a, "model_b": b, "eval_set": s, "metric": metric,
                         **{name: f(y, x) for name, f in DEFINITIONS.items()}, "distance": distance})
    return pd.DataFrame(rows)
