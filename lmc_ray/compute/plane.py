"""The plane through three models (the paper's 2-D interpolation): θ(s, t) = θ_A + s·(θ_B − θ_A) + t·(θ_C − θ_A).

Points are laid out as the paper draws them, in true distances: Gram–Schmidt on the two directions gives
orthonormal axes, A at (0, 0), B at (‖θ_B − θ_A‖, 0) and C above the x axis; a square-celled grid covers the
triangle with a margin around it. Each grid point (x, y) is evaluated as the mix (s, t) that lands on it, so the
same in-place mixing serves any layout. No Ray, no model: geometry only.
"""
from __future__ import annotations

import math
from typing import NamedTuple


class Point(NamedTuple):
    x: float  # coordinates in the plane (weight-space distance units)
    y: float
    s: float  # the mix: θ_A + s(θ_B − θ_A) + t(θ_C − θ_A)
    t: float
    vertex: str  # "A", "B" or "C" at a model, "" on the grid


def layout(ab: float, ab_ac: float, ac: float, n: int, margin: float) -> list[Point]:
    """The three vertices, then an n × n grid: `ab` = ‖θ_B − θ_A‖, `ab_ac` = (θ_B − θ_A)·(θ_C − θ_A),
    `ac` = ‖θ_C − θ_A‖; `margin` extends the grid beyond the triangle by that fraction of its width and height."""
    xc = ab_ac / ab
    yc = math.sqrt(max(ac * ac - xc * xc, 0.0))
    if ab <= 0 or yc <= 1e-12 * max(ab, ac):
        raise ValueError("the three models lie on one line: no plane through them")

    def mix(x: float, y: float, vertex: str = "") -> Point:
        t = y / yc
        return Point(x, y, (x - t * xc) / ab, t, vertex)

    lo, hi = min(0.0, xc), max(ab, xc)
    w, h = hi - lo, yc
    xs = [lo - margin * w + (1 + 2 * margin) * w * k / (n - 1) for k in range(n)]
    ys = [-margin * h + (1 + 2 * margin) * h * k / (n - 1) for k in range(n)]
    return [mix(0.0, 0.0, "A"), Point(ab, 0.0, 1.0, 0.0, "B"), Point(xc, yc, 0.0, 1.0, "C"),
            *(mix(x, y) for y in ys for x in xs)]
