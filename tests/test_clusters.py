import numpy as np
import pytest
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score

from lmc_ray.analysis import clusters as C


def block_matrix(sizes, within=0.05, between=1.5, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    b = np.where(lab[:, None] == lab[None, :], within, between) + noise * rng.random((len(lab), len(lab)))
    b = (b + b.T) / 2
    np.fill_diagonal(b, 0)
    return b, lab


def test_papers_recipe_is_sklearn_called_directly():
    b, _ = block_matrix([6, 9])
    want = SpectralClustering(n_clusters=2, affinity="precomputed", random_state=42).fit_predict(np.exp(-b**2 / 2))
    np.testing.assert_array_equal(C.paper(b), want)


@pytest.mark.parametrize("sizes", [[6, 9], [5, 5, 6]])
def test_block_structure_is_recovered(sizes):
    b, truth = block_matrix(sizes)
    long, summary = C.analyse(b, [f"m{i}" for i in range(len(truth))])
    assert summary["k_eigengap"] == len(sizes)
    for method in ("spectral_knn_delta", "average_linkage"):
        got = long[long.method == method].cluster.to_numpy()
        assert adjusted_rand_score(truth, got) == 1.0, method
    assert summary["stability_knn_delta"] > 0.9


def test_small_barriers_defeat_delta_one_but_not_the_data_driven_scale():
    b, truth = block_matrix([6, 6], within=0.001, between=0.03, noise=0.0005)
    assert C.knn_delta(b) < 0.005
    assert C.similarity(b, 1.0).min() > 0.999  # with δ = 1 every pair looks alike
    got = C.paper(b, C.knn_delta(b), 2)
    assert adjusted_rand_score(truth, got) == 1.0


def test_spectral_score_correlates_with_a_metric_that_follows_the_blocks():
    b, truth = block_matrix([6, 9])
    metric = truth * 0.5 + np.random.default_rng(1).normal(0, 0.05, len(truth))
    r, p = C.correlation(C.spectral_score(b, C.knn_delta(b)), metric)
    assert abs(r) > 0.9 and p < 1e-3


def test_nan_barriers_count_as_the_largest_when_clustering():
    """Lines whose losses overflowed have NaN barriers; between two basins they must keep the basins apart."""
    b, truth = block_matrix([5, 7])
    b[truth[:, None] != truth[None, :]] = np.nan  # every between-basin barrier unknown
    assert adjusted_rand_score(truth, C.paper(b)) == 1.0
    long, _ = C.analyse(b, [f"m{i}" for i in range(len(truth))])
    assert adjusted_rand_score(truth, long[long.method == "average_linkage"].cluster.to_numpy()) == 1.0
    zeros = np.nan_to_num(b, nan=0.0)  # were they read as 0, the basins would merge
    assert adjusted_rand_score(truth, C.paper(zeros)) < 1.0


def test_the_spectral_score_keeps_the_best_of_ten_k_means_restarts():
    """One k-means run can stop in a worse split of the embedding than the paper's 10 restarts find."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding

    for seed in range(40):
        b, _ = block_matrix([4, 5, 3], within=0.3, between=0.9, noise=0.6, seed=seed)
        emb = spectral_embedding(C.similarity(b, 1.0), n_components=2, random_state=42, drop_first=False)
        ten = KMeans(2, random_state=42, n_init=10).fit(emb)
        one = KMeans(2, random_state=42, n_init=1).fit(emb)
        want = np.linalg.norm(emb - ten.cluster_centers_[0], axis=1) - np.linalg.norm(emb - ten.cluster_centers_[1], axis=1)
        np.testing.assert_allclose(C.spectral_score(b, 1.0), want)
        if one.inertia_ > ten.inertia_ + 1e-9:
            return  # a matrix where the restarts matter, and the score took them
    pytest.fail("no matrix among 40 where one k-means run found a worse split than ten")


def test_a_permutation_test_says_whether_clusters_differ_on_a_score():
    labels = np.array([0] * 6 + [1] * 6)
    apart = np.r_[np.linspace(0.1, 0.2, 6), np.linspace(0.8, 0.9, 6)]
    assert C.permutation_p(labels, apart, n=2000) < 0.01  # 1 of 924 splits is this extreme, and its mirror
    mixed = np.tile([0.1, 0.9], 6)
    assert C.permutation_p(labels, mixed, n=2000) > 0.5
    assert np.isnan(C.permutation_p(np.zeros(12, int), apart))  # one cluster: nothing to compare
    assert np.isnan(C.permutation_p(labels, np.ones(12)))  # a score every model shares
    assert C.permutation_p(labels, apart, n=500, seed=3) == C.permutation_p(labels, apart, n=500, seed=3)
