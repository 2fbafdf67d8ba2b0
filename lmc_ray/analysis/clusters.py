"""From an N×N barrier matrix to basins: the paper's recipe, and checks on how much to trust it."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.stats import pearsonr
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_rand_score


def matrix(barriers: pd.DataFrame, names: list[str], eval_set: str, metric: str = "loss",
           column: str = "barrier") -> np.ndarray:
    """Symmetric N×N matrix of one barrier definition, zero on the diagonal, rows in `names` order."""
    pos = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(names), len(names)))
    sel = barriers[(barriers.eval_set == eval_set) & (barriers.metric == metric)]
    for a, b, v in zip(sel.model_a, sel.model_b, sel[column]):
        out[pos[a], pos[b]] = out[pos[b], pos[a]] = v
    return out


def similarity(b: np.ndarray, delta: float) -> np.ndarray:
    return np.exp(-np.nan_to_num(b, nan=np.nanmax(b) if np.isfinite(b).any() else 0.0) ** 2 / (2 * delta**2))


def paper(b: np.ndarray, delta: float = 1.0, k: int = 2) -> np.ndarray:
    """Juneja et al.: spectral clustering of exp(−B²/(2δ²)) with δ = 1, two clusters, seed 42."""
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=42).fit_predict(similarity(b, delta))


def knn_delta(b: np.ndarray) -> float:
    """A scale set by the data: the median over models of the barrier to their k-th nearest neighbour.

    With small barriers δ = 1 makes every similarity ≈ 1 and decides little; the median of all barriers
    fails too once most pairs lie between basins. A near-neighbour scale (as in self-tuning spectral
    clustering, Zelnik-Manor & Perona 2004) stays inside a basin as long as basins hold > k models.
    """
    n = len(b)
    k = max(1, min(7, n // 4))
    near = np.sort(np.where(np.eye(n, dtype=bool), np.inf, np.nan_to_num(b, nan=np.inf)), axis=1)[:, k - 1]
    near = near[np.isfinite(near) & (near > 0)]
    return float(np.median(near)) if len(near) else 1.0


def eigengap(s: np.ndarray, k_max: int = 6) -> int:
    """Number of clusters at the largest gap in the normalized Laplacian's smallest eigenvalues."""
    d = s.sum(1)
    lap = np.eye(len(s)) - s / np.sqrt(np.outer(d, d))
    ev = np.sort(np.linalg.eigvalsh(lap))[: min(k_max, len(s) - 1) + 1]
    return int(np.argmax(np.diff(ev)) + 1) if len(ev) > 1 else 1


def hierarchical(b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Average-linkage clusters (a second opinion) and the linkage itself, for a dendrogram."""
    z = linkage(squareform(np.nan_to_num(b, nan=np.nanmax(b)), checks=False), method="average")
    return fcluster(z, k, criterion="maxclust") - 1, z


def stability(b: np.ndarray, delta: float, k: int, rounds: int = 20, frac: float = 0.8, seed: int = 0) -> float:
    """Mean ARI between clusters of random model subsets and the full clustering restricted to them."""
    n = len(b)
    if k < 2 or n < 4:
        return float("nan")
    full = paper(b, delta, k)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(rounds):
        idx = np.sort(rng.choice(n, size=max(k + 1, int(frac * n)), replace=False))
        scores.append(adjusted_rand_score(full[idx], paper(b[np.ix_(idx, idx)], delta, k)))
    return float(np.mean(scores))


def spectral_score(b: np.ndarray, delta: float, seed: int = 42) -> np.ndarray:
    """The paper's 1-D score: 2-D spectral embedding, k-means into two centres, distance to one minus the other.
    k-means keeps the best of 10 restarts, as the paper's call did: it relied on sklearn's default n_init, which
    was 10 until sklearn 1.4 made it one run ("auto")."""
    emb = spectral_embedding(similarity(b, delta), n_components=2, random_state=seed, drop_first=False)
    centres = KMeans(2, random_state=seed, n_init=10).fit(emb).cluster_centers_
    return np.linalg.norm(emb - centres[0], axis=1) - np.linalg.norm(emb - centres[1], axis=1)


def permutation_p(labels: np.ndarray, score: np.ndarray, n: int = 10_000, seed: int = 0) -> float:
    """Whether the clusters differ on a per-model score more than chance: the share of random relabellings (same
    cluster sizes) whose between-cluster sum of squares of the score is at least the observed one (two clusters:
    the difference of their means). NaN with one cluster, a constant score or fewer than 3 models."""
    ok = np.isfinite(score)
    labels, score = np.asarray(labels)[ok], np.asarray(score, dtype=float)[ok]
    if len(np.unique(labels)) < 2 or len(score) < 3 or np.ptp(score) == 0:
        return float("nan")

    def between(lab):
        return sum((lab == c).sum() * (score[lab == c].mean() - score.mean()) ** 2 for c in np.unique(lab))

    rng = np.random.default_rng(seed)
    seen = between(labels)
    hits = sum(between(rng.permutation(labels)) >= seen - 1e-12 for _ in range(n))
    return float((hits + 1) / (n + 1))


def correlation(score: np.ndarray, metric: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(score) & np.isfinite(metric)
    if ok.sum() < 3 or np.ptp(metric[ok]) == 0 or np.ptp(score[ok]) == 0:
        return float("nan"), float("nan")
    r, p = pearsonr(score[ok], metric[ok])
    return float(r), float(p)


def analyse(b: np.ndarray, names: list[str]) -> tuple[pd.DataFrame, dict]:
    """Every clustering method on one matrix: per-model labels (long form) and a summary."""
    delta = knn_delta(b)
    k = max(2, eigengap(similarity(b, delta)))
    labels = {
        "paper": paper(b, 1.0, 2),
        "spectral_knn_delta": paper(b, delta, k),
        "average_linkage": hierarchical(b, k)[0],
    }
    summary = {
        "delta_knn": delta, "k_eigengap": k,
        "ari_paper_vs_linkage": float(adjusted_rand_score(labels["paper"], hierarchical(b, 2)[0])),
        "ari_spectral_vs_linkage": float(adjusted_rand_score(labels["spectral_knn_delta"], labels["average_linkage"])),
        "stability_paper": stability(b, 1.0, 2), "stability_knn_delta": stability(b, delta, k),
    }
    long = pd.DataFrame([{"model": n, "method": m, "cluster": int(c)} for m, lab in labels.items()
                         for n, c in zip(names, lab)])
    return long, summary
