import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef

from lmc_ray.compute import metrics


@pytest.mark.parametrize("k", [2, 3])
def test_f1_and_mcc_match_scikit_learn(k):
    rng = np.random.default_rng(k)
    for trial in range(50):
        n = int(rng.integers(1, 40))
        y = rng.integers(0, k, n)
        # Mostly right, sometimes constant: the degenerate cases (one class only) are where formulas differ.
        p = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n)) if trial % 5 else np.zeros(n, dtype=int)
        conf = confusion_matrix(y, p, labels=list(range(k)))
        want_f1 = f1_score(y, p, average="binary" if k == 2 else "macro", zero_division=0)
        assert metrics.f1(conf) == pytest.approx(want_f1, abs=1e-12), (y, p)
        assert metrics.mcc(conf) == pytest.approx(matthews_corrcoef(y, p), abs=1e-12), (y, p)


def test_metrics_are_computed_per_leading_index():
    confs = np.array([[[5, 1], [2, 7]], [[3, 0], [0, 4]], [[0, 0], [0, 9]]])
    np.testing.assert_allclose(metrics.mcc(confs), [metrics.mcc(c) for c in confs])
    np.testing.assert_allclose(metrics.f1(confs), [metrics.f1(c) for c in confs])
    assert metrics.mcc(confs[1]) == 1.0 and metrics.mcc(confs[2]) == 0.0
