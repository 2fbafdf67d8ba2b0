import math

import numpy as np
import pandas as pd
import pytest

from lmc_ray.analysis import barriers as B

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
                               "midpoint_barrier", "area", "distance"]
    assert t.distance.isna().all()  # curves without a distance (stored before it existed)


def test_every_definition_on_a_stack_of_curves_equals_one_curve_at_a_time():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(7, 10))
    y[3, 4] = np.nan
    x = np.sort(np.concatenate([[0, 1], rng.uniform(size=8)]))
    for f in B.DEFINITIONS.values():
        np.testing.assert_allclose(f(y, x), [f(row, x) for row in y], equal_nan=True)


def _bumps(rng, n, height, noise=1.0):
    """Per-example losses [α, example] on a 5-point line whose mean curve rises `height` at α = 0.5."""
    mean = np.array([1, 1 + height / 2, 1 + height, 1 + height / 2, 1])
    shared = rng.normal(size=n)  # an example hard at one α is hard at all: what the paired bootstrap keeps
    return mean[:, None] + noise * (0.8 * shared + 0.6 * rng.normal(size=(5, n)))


def test_bootstrap_intervals_cover_the_true_barrier_at_their_level():
    """200 simulated eval sets drawn from a known line (true barrier 0.3): the 90 % interval from each covers
    0.3 about 90 % of the time, and an interval from 4x the examples is about half as wide."""
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for _ in range(200):
        values = _bumps(rng, 256, 0.3)
        lo, hi = B.interval(values, X, B.resample(256, 400, rng), level=0.9)
        covered += lo <= 0.3 <= hi
        widths.append(hi - lo)
    assert 0.84 <= covered / 200 <= 0.96
    lo, hi = B.interval(_bumps(rng, 1024, 0.3), X, B.resample(1024, 400, rng), level=0.9)
    assert 0.4 < (hi - lo) / np.median(widths) < 0.6


def test_the_paired_bootstrap_is_narrower_than_resampling_each_alpha_apart():
    """Examples hard at every α move the whole curve together, which a barrier (a difference) cancels."""
    rng = np.random.default_rng(2)
    values = _bumps(rng, 512, 0.3)
    counts = B.resample(512, 400, rng)
    paired = np.subtract(*B.interval(values, X, counts)[::-1])
    apart = np.stack([counts[rng.permutation(400)] @ v / 512 for v in values], 1)  # a different draw per α
    lo, hi = np.quantile(B.paper(apart, X), [0.025, 0.975])
    assert paired < 0.7 * (hi - lo)
