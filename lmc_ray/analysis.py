"""From a finished store to the paper's findings: barriers, basins, and how each basin generalizes."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from . import barriers as B
from . import clusters as C
from .config import ConfigError
from .store import Store


@dataclass
class Analysis:
    names: list[str]
    eval_set: str
    metric: str
    curves: pd.DataFrame
    barriers: pd.DataFrame
    matrix: np.ndarray
    clusters: pd.DataFrame  # model, method, cluster
    summary: dict
    per_model: pd.DataFrame  # model, cluster, one column per diagnostic metric
    per_cluster: pd.DataFrame  # metric, cluster, mean, std, min, max, n
    correlations: pd.DataFrame  # metric, pearson_r, p_value

    def labels(self, method: str = "paper") -> np.ndarray:
        sel = self.clusters[self.clusters.method == method].set_index("model").cluster
        return sel.loc[self.names].to_numpy()


def _read(store: Store) -> tuple[list[str], dict, pd.DataFrame, pd.DataFrame]:
    try:
        run = json.loads(store.fs.cat_file(store.path("run.json")))
    except FileNotFoundError:
        raise ConfigError(f"store {store.url!r}: no run.json (not an lmc-ray store, or nothing written yet)") from None
    fp = run["fingerprint"]
    names = [m["name"] for m in fp["models"]]
    curves = store.curves().to_table().to_pandas()
    import pyarrow.dataset as ds

    ends = ds.dataset(store.path("endpoints"), filesystem=store.fs, format="parquet").to_table().to_pandas()
    return names, fp, curves, ends


def run(store: Store, eval_set: str | None = None, metric: str = "loss") -> Analysis:
    names, fp, curves, ends = _read(store)
    n_pairs = curves.groupby(["model_a", "model_b"]).ngroups
    want = len(names) * (len(names) - 1) // 2
    if n_pairs < want:
        raise ConfigError(f"store {store.url!r}: {n_pairs} of {want} pairs stored; finish the sweep first (rerun it)")
    sets = [e["name"] for e in fp["eval_sets"]]
    eval_set = eval_set or sets[0]
    if eval_set not in sets:
        raise ConfigError(f"eval set {eval_set!r} is not in the store (it has: {', '.join(sets)})")
    if metric not in ("loss", "error"):
        raise ConfigError(f"metric {metric!r}: use loss or error")
    bar = B.table(curves)
    mat = C.matrix(bar, names, eval_set, metric)
    clusters, summary = C.analyse(mat, names)
    summary.update(eval_set=eval_set, metric=metric, n_models=len(names),
                   nan_pairs=int(bar[(bar.metric == metric) & (bar.eval_set == eval_set)].barrier.isna().sum()))

    # Generalization: each model alone (its endpoint rows): every subset of the diagnostic sets, and the
    # whole of the in-domain ones (do the basins agree in-domain while differing out of distribution?).
    diag_sets = [e["name"] for e in fp["eval_sets"] if e.get("role") == "diagnostic"]
    ends = ends[ends.eval_set.isin(diag_sets) | (ends.subset == "all")]
    wide = pd.concat([
        ends[ends.eval_set == e["name"]].assign(key=lambda d, m=m: d.eval_set + "/" + d.subset + "/" + m)
        .pivot_table(index="model", columns="key", values=m)
        for e in fp["eval_sets"] for m in e.get("metrics", ["accuracy"])], axis=1).reindex(names)
    paper_labels = C.paper(mat)
    per_model = wide.assign(cluster=paper_labels).reset_index()
    stats = []
    for key in wide.columns:
        for c, g in per_model.groupby("cluster"):
            v = g[key].to_numpy()
            stats.append({"metric": key, "cluster": int(c), "n": len(v), "mean": np.nanmean(v), "std": np.nanstd(v),
                          "min": np.nanmin(v), "max": np.nanmax(v)})
    score = C.spectral_score(mat, C.knn_delta(mat))
    corr = [{"metric": key, **dict(zip(("pearson_r", "p_value"), C.correlation(score, wide[key].to_numpy())))}
            for key in wide.columns]
    return Analysis(names, eval_set, metric, curves, bar, mat, clusters, summary, per_model, pd.DataFrame(stats),
                    pd.DataFrame(corr))


def write(store: Store, a: Analysis) -> None:
    """barriers.parquet, clusters.parquet, barrier_matrix.parquet beside the curves (atomic, like the curves)."""
    matrix = pd.DataFrame(a.matrix, columns=a.names).assign(model=a.names)[["model", *a.names]]
    for rel, df in (("barriers.parquet", a.barriers), ("barrier_matrix.parquet", matrix),
                    ("clusters.parquet", a.clusters.assign(eval_set=a.eval_set, metric=a.metric))):
        store.put_table(rel, pa.Table.from_pandas(df, preserve_index=False))


def text_summary(a: Analysis) -> str:
    s = a.summary
    lines = [f"{s['n_models']} models, barriers on {a.eval_set} ({a.metric}); "
             f"paper's recipe: {np.bincount(a.labels('paper')).tolist()} models per cluster; "
             f"eigengap suggests k = {s['k_eigengap']} (δ = {s['delta_knn']:.3g}); "
             f"ARI paper vs linkage {s['ari_paper_vs_linkage']:.2f}; stability {s['stability_paper']:.2f}"]
    top = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric)].nlargest(5, "barrier")
    lines.append("highest barriers: " + "; ".join(f"{r.model_a}|{r.model_b} {r.barrier:.4f}" for r in top.itertuples()))
    for key in a.correlations.metric:
        sub = a.per_cluster[a.per_cluster.metric == key]
        r = a.correlations.set_index("metric").loc[key, "pearson_r"]
        means = ", ".join(f"cluster {c}: {m:.3f}±{sd:.3f}" for c, m, sd in zip(sub.cluster, sub["mean"], sub["std"]))
        lines.append(f"{key}: {means}; Pearson r with spectral score {r:.2f}")
    if s["nan_pairs"]:
        sel = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric) & a.barriers.barrier.isna()]
        shown = "; ".join(f"{r.model_a}|{r.model_b}" for r in sel.head(10).itertuples())
        lines.append(f"warning: {s['nan_pairs']} pairs have NaN barriers (NaN or inf losses along the line; treated as "
                     f"the largest barrier when clustering): {shown}{' ...' if len(sel) > 10 else ''}")
    return "\n".join(lines)
