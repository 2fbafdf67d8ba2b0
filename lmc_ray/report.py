"""A self-contained HTML report with PNG figures: what a researcher looks at rather than reads."""
from __future__ import annotations

import html
import io

import matplotlib

matplotlib.use("Agg")  # headless: the job may run on a cluster node without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from . import clusters as C  # noqa: E402
from .analysis import Analysis, text_summary  # noqa: E402
from .store import Store  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap(a: Analysis) -> bytes:
    labels = a.labels("paper")
    order = np.lexsort((np.arange(len(labels)), labels))
    fig, (ax_d, ax) = plt.subplots(2, 1, figsize=(7, 8.5), gridspec_kw={"height_ratios": [1, 4]})
    _, z = C.hierarchical(a.matrix, 2)
    dendrogram(z, ax=ax_d, no_labels=True, color_threshold=None)
    ax_d.set_title("average-linkage dendrogram")
    ax_d.set_yticks([])
    im = ax.imshow(a.matrix[np.ix_(order, order)], cmap="magma")
    ticks = [a.names[i] for i in order]
    short = [t if len(t) < 18 else "…" + t[-16:] for t in ticks]
    ax.set_xticks(range(len(order)), short, rotation=90, fontsize=7)
    ax.set_yticks(range(len(order)), short, fontsize=7)
    for edge in np.flatnonzero(np.diff(labels[order])) + 0.5:
        ax.axhline(edge, color="cyan", lw=1.5)
        ax.axvline(edge, color="cyan", lw=1.5)
    ax.set_title(f"{a.metric} barrier on {a.eval_set}, ordered by cluster (paper's recipe)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def curves(a: Analysis) -> bytes:
    """The paper's Figure 1: mean loss along α within each cluster and between clusters, per eval set."""
    cluster_of = dict(zip(a.names, a.labels("paper")))
    df = a.curves[a.curves.subset == "all"].copy()
    # Adaptive α adds points per pair; the mean curve uses the grid every pair shares.
    per_alpha = df.drop_duplicates(["model_a", "model_b", "alpha"]).groupby("alpha").size()
    df = df[df.alpha.isin(per_alpha.index[per_alpha == per_alpha.max()])]
    ca, cb = df.model_a.map(cluster_of), df.model_b.map(cluster_of)
    df["group"] = np.where(ca == cb, "within cluster " + ca.astype(str), "between clusters")
    sets = list(dict.fromkeys(df.eval_set))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for ax, s in zip(axes[0], sets):
        for group, g in df[df.eval_set == s].groupby("group"):
            m = g.groupby("alpha").loss.agg(["mean", "std"])
            ax.plot(m.index, m["mean"], marker="o", label=f"{group} ({g.groupby(['model_a', 'model_b']).ngroups})")
            ax.fill_between(m.index, m["mean"] - m["std"], m["mean"] + m["std"], alpha=0.15)
        ax.set_xlabel("α (weight of model B)")
        ax.set_ylabel("mean loss")
        ax.set_title(s)
        ax.legend(fontsize=8)
    return _png(fig)


def intervals(a: Analysis) -> bytes:
    """Every pair's barrier with its bootstrap interval, in rank order: are the basins apart beyond noise?"""
    cluster_of = dict(zip(a.names, a.labels("paper")))
    df = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric)].sort_values("barrier")
    within = (df.model_a.map(cluster_of) == df.model_b.map(cluster_of)).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    rank = np.arange(len(df))
    for sel, label, color in ((within, "within a cluster", "tab:blue"), (~within, "between clusters", "tab:red")):
        err = [df.barrier[sel] - df.barrier_lo[sel], df.barrier_hi[sel] - df.barrier[sel]]
        ax.errorbar(rank[sel], df.barrier[sel], yerr=np.clip(err, 0, None), fmt="o", ms=3, lw=0.8, color=color,
                    label=label)
    ax.set_xlabel("pairs, by barrier")
    ax.set_ylabel(f"{a.metric} barrier")
    ax.set_title(f"{a.summary['level']:.0%} bootstrap intervals on {a.eval_set}")
    ax.legend(fontsize=8)
    return _png(fig)


def histograms(a: Analysis) -> bytes:
    keys = list(a.per_cluster.metric.unique())[:6]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for c, g in a.per_model.groupby("cluster"):
            ax.hist(g[key].dropna(), bins=np.linspace(0, 1, 21), alpha=0.6, label=f"cluster {c}")
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("accuracy")
        ax.legend(fontsize=8)
    return _png(fig)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t")


def write(store: Store, a: Analysis) -> str:
    """STORE/report/index.html and its PNGs; returns the index path."""
    figures = {"heatmap.png": heatmap(a), "curves.png": curves(a), "diagnostic_histograms.png": histograms(a)}
    if "barrier_lo" in a.barriers:
        figures["intervals.png"] = intervals(a)
    for name, data in figures.items():
        store.put(f"report/{name}", data)
    summary = pd.DataFrame([{"key": k, "value": v} for k, v in a.summary.items()])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lmc-ray report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table.t td,table.t th{{padding:2px 8px}}
img{{max-width:100%}} pre{{background:#f4f4f4;padding:1em;white-space:pre-wrap}}</style></head><body>
<h1>Linear mode connectivity: {len(a.names)} models</h1>
<pre>{html.escape(text_summary(a))}</pre>
<h2>Barrier matrix</h2><img src="heatmap.png" alt="barrier heatmap">
<h2>Interpolation curves within and between clusters</h2><img src="curves.png" alt="mean curves">
{'<h2>Barriers with bootstrap intervals</h2><img src="intervals.png" alt="intervals">' if "intervals.png" in figures else ""}
<h2>Diagnostic accuracy per cluster</h2><img src="diagnostic_histograms.png" alt="histograms">
<h3>Per cluster</h3>{_table(a.per_cluster)}
<h3>Correlation with the spectral score</h3>{_table(a.correlations)}
<h3>Clustering</h3>{_table(summary)}
<h3>Per model</h3>{_table(a.per_model)}
</body></html>"""
    store.put("report/index.html", page.encode())
    return store.path("report", "index.html")
