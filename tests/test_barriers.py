import math

import numpy as np
import pandas as pd
import pytest

from lmc_ray import barriers as B

X = np.linspace(0, 1, 5)


@pytest.mark.parametrize("y, paper, endpoint, mid, area", [
    ([1, 1, 1, 1, 1], 0, 0, 0, 0),                                   # flat
    ([1, 0.5, 0.25, 0.5, 1], 0, 0, 0, -(0.5 + 0.75 + 0.5) * 0.25),    # convex dip: no barrier
    ([1, 1, 2, 1, 1], 1, 1, 1, 0.25),                                 # single bump
    ([0, 1, 2, 3, 4], 0, 0, 2, 0),                                    # straight slope
])
def test_definitions_on_hand_made_curves(y, paper, endpoint, mid, area):
    assert B.paper(y, X) == pytest.approx(paper)
    assert B.endpoint_chord(y, X) == pytest.approx(endpoint)
    assert B.midpoint(y, X) == pytest.approx(mid)
    assert B.area(y, X) == pytest.approx(area)


def test_bump_between_two_dips_is_seen_only_by_the_papers_sub_segments():
    # Ends high, two deep dips, a bump between them that stays below the endpoint chord.
    y = [2.0, 0.0, 1.0, 0.0, 2.0]
    assert B.endpoint_chord(y, X) == 0.0
    assert B.paper(y, X) == pytest.approx(1.0)  # chord from dip to dip is 0; the bump rises 1 above it
    assert B.midpoint(y, X) == pytest.approx(0.0)


def test_nan_curves_give_nan():
    y = [1, float("nan"), 1]
    assert all(math.isnan(f(y)) for f in B.DEFINITIONS.values())


def test_table_from_curve_rows():
    rows = [{"model_a": "a", "model_b": "b", "alpha": al, "eval_set": "nli", "subset": "all", "n_examples": 4,
             "loss": lo, "accuracy": ac} for al, lo, ac in zip(X, [1, 1, 2, 1, 1], [1, 0.75, 0.25, 0.75, 1])]
    t = B.table(pd.DataFrame(rows))
    loss = t[t.metric == "loss"].iloc[0]
    err = t[t.metric == "error"].iloc[0]
    assert loss.barrier == pytest.approx(1.0) and err.barrier == pytest.approx(0.75)
    assert list(t.columns) == ["model_a", "model_b", "eval_set", "metric", "barrier", "endpoint_barrier",
                               "midpoint_barrier", "area"]


def test_refinement_brackets_the_highest_point_above_the_endpoint_chord():
    from lmc_ray.barriers import refine_points

    # Endpoints 1.0 and 2.0: the chord rises, so 0.5 (1.9 vs chord 1.5) beats 0.75 (2.0 vs chord 1.75).
    assert refine_points({0.25: 1.4, 0.5: 1.9, 0.75: 2.0}, (1.0, 2.0)) == [0.375, 0.625]
    assert refine_points({0.5: 1.9, 0.625: 1.0}, (1.0, 2.0)) == [0.25, 0.5625]  # between its neighbours
    assert refine_points({0.5: float("nan")}, (1.0, 2.0)) == []
