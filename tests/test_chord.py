import numpy as np

from lmc_ray.compute.chord import excess, refine_points


def test_excess_is_the_rise_above_the_chord_between_two_points():
    x = np.linspace(0, 1, 5)
    y = np.array([1.0, 2.0, 3.0, 2.5, 2.0])  # chord from (0, 1) to (1, 2): 1.25, 1.5, 1.75 inside
    assert np.allclose(excess(y, x, 0, 4), [0.0, 0.75, 1.5, 0.75, 0.0])
    assert np.allclose(excess(y, x, 1, 3), [0.0, 0.75, 0.0])  # chord from (0.25, 2) to (0.75, 2.5)
    stack = np.stack([y, 2 * y])
    assert np.allclose(excess(stack, x, 0, 4)[1], 2 * excess(y, x, 0, 4))


def test_refinement_brackets_the_highest_point_above_the_endpoint_chord():
    # Endpoints 1.0 and 2.0: the chord rises, so 0.5 (1.9 vs chord 1.5) beats 0.75 (2.0 vs chord 1.75).
    assert refine_points({0.25: 1.4, 0.5: 1.9, 0.75: 2.0}, (1.0, 2.0)) == [0.375, 0.625]
    assert refine_points({0.5: 1.9, 0.625: 1.0}, (1.0, 2.0)) == [0.25, 0.5625]  # between its neighbours
    assert refine_points({0.5: float("nan")}, (1.0, 2.0)) == []
