"""A self-contained HTML report with PNG figures: what a researcher looks at rather than reads."""
from __future__ import annotations

import html
import io
import re

import matplotlib

matplotlib.use("Agg")  # headless: the job may run on a cluster node without a display
matplotlib.rcParams["text.parse_math"] = False  # names and keys are the user's: "a$b$" is text, not TeX
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from . import clusters as C  # noqa: E402
from .findings import Analysis, stability_words, text_summary, verdict  # noqa: E402
from ..storage.store import Store  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _short(names) -> list[str]:
    return [t if len(t) < 18 else "…" + t[-16:] for t in names]


def heatmap(a: Analysis) -> bytes:
    """The barrier matrix in the dendrogram's leaf order (so the tree above stands over its own columns), with
    the paper's clusters as a colour strip."""
    _, z = C.hierarchical(a.matrix, 2)
    n = len(a.names)
    fig, (ax_d, ax_s, ax) = plt.subplots(3, 1, figsize=(7, 9), gridspec_kw={"height_ratios": [1, 0.12, 4]},
                                         sharex=True)
    order = dendrogram(z, ax=ax_d, no_labels=True, color_threshold=None)["leaves"]
    ax_d.set_title("average-linkage dendrogram; strip: clusters (paper's recipe)")
    ax_d.set_yticks([])
    extent = (0, 10 * n, 10 * n, 0)  # the dendrogram puts leaf k at 10k + 5
    ax_s.imshow(a.labels("paper")[order][None, :], cmap="tab10", vmin=0, vmax=9, aspect="auto", extent=(0, 10 * n, 1, 0))
    ax_s.set_yticks([])
    im = ax.imshow(a.matrix[np.ix_(order, order)], cmap="magma", extent=extent, aspect="auto")
    ticks = 10 * np.arange(n) + 5
    short = _short([a.names[i] for i in order])
    ax.set_xticks(ticks, short, rotation=90, fontsize=7)
    ax.set_yticks(ticks, short, fontsize=7)
    ax.set_title(f"{a.metric} barrier on {a.eval_set}")
    fig.colorbar(im, ax=[ax_d, ax_s, ax], shrink=0.6)
    return _png(fig)


def ood_heatmap(a: Analysis, ood: str) -> bytes:
    """The paper's main heatmaps: the barrier matrix ordered by each model's out-of-distribution score, which
    labels the ticks."""
    score = a.per_model.set_index("model").loc[a.names, ood].to_numpy()
    order = np.argsort(score, kind="stable")
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(a.matrix[np.ix_(order, order)], cmap="magma")
    ticks = [f"{score[i]:.2f}" for i in order]
    ax.set_xticks(range(len(order)), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(len(order)), ticks, fontsize=7)
    ax.set_title(f"{a.metric} barrier on {a.eval_set}, models ordered by {ood}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


GROUPS = ("gen. to gen.", "heur. to heur.", "gen. to heur.")  # the paper's Figure 1 names


def extreme_groups(a: Analysis, ood: str, k: int = 5) -> pd.DataFrame:
    """The paper's Figure 1 as numbers: the k models best by the OOD score ("gen.") and the k worst ("heur."),
    and per eval set with lines the mean loss curve of each group of pairs (gen. with gen., heur. with heur., gen.
    to heur., each line oriented from its gen. model), with a 95 % band for the mean over the group's pairs.
    Lines with extra α (`refine`) are read at the α every line of the group has."""
    score = a.per_model.set_index("model").loc[a.names, ood]
    k = max(1, min(k, len(a.names) // 2))
    ranked = score.sort_values(kind="stable").index
    heur, gen = set(ranked[:k]), set(ranked[-k:])
    df = a.curves[(a.curves.subset == "all") & a.curves.model_a.isin(heur | gen) & a.curves.model_b.isin(heur | gen)]
    rows = []
    for s, d in df.groupby("eval_set", sort=False):
        lines = {g: [] for g in GROUPS}
        for (ma, mb), g in d.groupby(["model_a", "model_b"]):
            group = GROUPS[0] if {ma, mb} <= gen else GROUPS[1] if {ma, mb} <= heur else GROUPS[2]
            alpha = g.alpha.to_numpy() if ma in gen or group != GROUPS[2] else 1.0 - g.alpha.to_numpy()
            lines[group].append(pd.Series(g.loss.to_numpy(), index=alpha))
        for group, curves in lines.items():
            if not curves:
                continue
            table = pd.concat(curves, axis=1).sort_index().dropna()  # the α every line has
            mean, n = table.mean(axis=1), table.shape[1]
            half = 1.96 * table.std(axis=1, ddof=1).fillna(0.0) / np.sqrt(n)
            rows += [{"eval_set": s, "group": group, "alpha": al, "loss": m, "lo": m - h, "hi": m + h, "pairs": n}
                     for al, m, h in zip(table.index, mean, half)]
    return pd.DataFrame(rows, columns=["eval_set", "group", "alpha", "loss", "lo", "hi", "pairs"])


def extremes(a: Analysis, ood: str, k: int = 5) -> bytes:
    """The paper's Figure 1: extreme_groups' mean curves, one panel per eval set with lines."""
    groups = extreme_groups(a, ood, k)
    sets = list(dict.fromkeys(groups.eval_set))
    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(5 * max(1, len(sets)), 3.8), squeeze=False)
    colours = dict(zip(GROUPS, ("tab:green", "tab:red", "tab:gray")))
    for ax, s in zip(axes[0], sets):
        for group, g in groups[groups.eval_set == s].groupby("group", sort=False):
            ax.plot(g.alpha, g.loss, color=colours[group], marker="o", ms=3, label=f"{group} ({g.pairs.iloc[0]} pairs)")
            ax.fill_between(g.alpha, g.lo, g.hi, color=colours[group], alpha=0.2, lw=0)
        ax.set_xlabel("α (0: the first model, gen. for gen. to heur.)")
        ax.set_ylabel("loss, mean over the pairs")
        ax.set_title(s)
        ax.legend(fontsize=8)
    k = max(1, min(k, len(a.names) // 2))
    fig.suptitle(f"gen.: the {k} best models by {ood}; heur.: the {k} worst", fontsize=9)
    return _png(fig)


def scatter(a: Analysis, ood: str, label: int = 3) -> bytes:
    """The paper's spectral score (δ = 1) against the OOD score, with Pearson r: one colour per cluster, the
    `label` best and worst models by the OOD score named."""
    x = C.spectral_score(a.matrix, 1.0)
    y = a.per_model.set_index("model").loc[a.names, ood].to_numpy()
    r = a.correlations.set_index(["metric", "score"]).pearson_r.get((ood, "paper_delta1"), float("nan"))
    labels = a.labels("paper")
    fig, ax = plt.subplots(figsize=(7, 5))
    for c in np.unique(labels):
        at = labels == c
        ax.scatter(x[at], y[at], color=plt.cm.tab10(c % 10), s=24, label=f"cluster {c} ({at.sum()} models)")
    order = np.argsort(y, kind="stable")
    for i in {*order[:label], *order[-label:]}:
        ax.annotate(_short([a.names[i]])[0], (x[i], y[i]), xytext=(4, 3), textcoords="offset points", fontsize=8)
    ax.set_xlabel("spectral score (paper's, δ = 1)")
    ax.set_ylabel(_wrap(ood), fontsize=9)
    ax.set_title(f"Pearson r = {r:.2f}" if np.isfinite(r) else "Pearson r undefined (a constant score)")
    ax.legend(fontsize=8)
    return _png(fig)


def _wrap(text: str, width: int = 40) -> str:
    """A long score key over several lines, broken at its slashes and commas, so a title stays legible."""
    lines, line = [], ""
    for part in re.split(r"(?<=[/,])", text):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


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


def histograms(a: Analysis, keys: list[str]) -> bytes:
    """Each score's distribution per cluster, three panels across."""
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.flat, keys):
        for c, g in a.per_model.groupby("cluster"):
            ax.hist(g[key].dropna(), bins=np.linspace(0, 1, 21), alpha=0.6, color=plt.cm.tab10(c % 10),
                    label=f"cluster {c}")
        ax.set_title(_wrap(key), fontsize=9)
        ax.set_xlabel(key.rsplit("/", 1)[-1])
        ax.set_ylabel("models")
        ax.legend(fontsize=8)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    return _png(fig)


def summary_table(a: Analysis) -> pd.DataFrame:
    """One row per cluster (and all models): its size and, for each eval set scored whole, the mean ± sd and
    range of its models' scores."""
    keys = [k for k in a.per_model.columns if k.split("/")[1:2] == ["all"]]
    groups = [(f"cluster {c}", g) for c, g in a.per_model.groupby("cluster")] + [("all models", a.per_model)]
    rows = []
    for name, g in groups:
        row = {"": name, "models": len(g)}
        for k in keys:
            v = g[k].dropna()
            row[k] = f"{v.mean():.3f} ± {v.std(ddof=0):.3f} ({v.min():.3f}–{v.max():.3f})" if len(v) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def correlation_table(a: Analysis) -> pd.DataFrame:
    """Pearson r (p) of each varying score with the spectral score, paper's δ = 1 and δ from the data."""
    c = a.correlations.pivot(index="metric", columns="score", values=["pearson_r", "p_value"])
    return pd.DataFrame({"score": c.index,
                         **{f"r (p), {words}": [f"{r:.2f} (p = {p:.2g})" for r, p in
                                                zip(c["pearson_r", name], c["p_value", name])]
                            for name, words in (("paper_delta1", "paper's δ = 1"), ("knn_delta", "δ from the data"))}})


def _table(df: pd.DataFrame) -> str:
    """An HTML table in a box that scrolls sideways when it is wider than the page."""
    return f'<div class="scroll">{df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t")}</div>'


def planes(store: Store, a: Analysis) -> bytes | None:
    """Contours of loss and accuracy over each stored plane through three of the analysed models (first line set,
    whole set), the three models marked: one row per plane. None when the store has none."""
    if not store.has("planes"):
        return None
    df = store.planes().to_table(columns=["model_a", "model_b", "model_c", "x", "y", "vertex", "eval_set", "subset",
                                          "loss", "accuracy"]).to_pandas()
    df = df[df.model_a.isin(a.names) & df.model_b.isin(a.names) & df.model_c.isin(a.names)
            & (df.eval_set == a.eval_set) & (df.subset == "all")]
    triples = list(df.groupby(["model_a", "model_b", "model_c"], sort=True))
    if not triples:
        return None
    fig = plt.figure(figsize=(10, 4.6 * len(triples)), layout="constrained")
    cluster = dict(zip(a.names, a.labels()))
    for sub, ((ma, mb, mc), g) in zip(np.atleast_1d(fig.subfigures(len(triples), 1)), triples):
        row = sub.subplots(1, 2)
        sub.suptitle(", ".join(f"{v} = {_short([m])[0]} (cluster {cluster[m]})" for v, m in zip("ABC", (ma, mb, mc))))
        grid = g[g.vertex == ""]
        for ax, metric, cmap in zip(row, ("loss", "accuracy"), ("viridis", "viridis_r")):
            table = grid.pivot_table(index="y", columns="x", values=metric)
            v = table.to_numpy()
            # The far corners of the margin can be much worse than anything near the models: the colour scale
            # stops at the 90th percentile (loss) / starts at the 10th (accuracy) so a barrier between them shows.
            lo, hi = ((np.nanmin(v), np.nanquantile(v, 0.9)) if metric == "loss" else (np.nanquantile(v, 0.1), np.nanmax(v)))
            levels = np.linspace(lo, hi if hi > lo else lo + 1e-9, 15)
            filled = ax.contourf(table.columns, table.index, v, levels=levels, cmap=cmap,
                                 extend="max" if metric == "loss" else "min")
            sub.colorbar(filled, ax=ax)
            for _, p in g[g.vertex != ""].iterrows():  # the models as letters; who they are above the row
                ax.plot(p.x, p.y, "o", color="white", markeredgecolor="black", markersize=13)
                ax.annotate(p.vertex, (p.x, p.y), ha="center", va="center", fontsize=8, fontweight="bold")
            ax.set_title(f"{metric} on {a.eval_set}")
            ax.set_aspect("equal")
    return _png(fig)


def dynamics(a: Analysis) -> bytes:
    """Who moved where: one row per model, one column per saved step, coloured by cluster (numbered to follow the
    step before), each cell with the model's score at that step."""
    d = a.dynamics
    steps = list(dict.fromkeys(d.step))
    models = sorted(d.model.unique(), key=lambda m: (tuple(d[d.model == m].cluster), m))
    clusters = d.pivot(index="model", columns="step", values="cluster").loc[models, steps]
    scores = d.pivot(index="model", columns="step", values="score").loc[models, steps]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(steps), 0.9 + 0.32 * len(models)))
    ax.imshow(clusters.to_numpy(), cmap="tab10", vmin=0, vmax=9, aspect="auto")
    for (r, c), v in np.ndenumerate(scores.to_numpy()):
        ax.text(c, r, f"{clusters.iat[r, c]}  {v:.2f}", ha="center", va="center", fontsize=8, color="white")
    ax.set_xticks(range(len(steps)), [f"step {s}" for s in steps])
    ax.set_yticks(range(len(models)), _short(models), fontsize=8)
    ax.set_title("cluster (colour, number) and diagnostic score at each step")
    return _png(fig)


def write(store: Store, a: Analysis, out: Store | None = None) -> str:
    """OUT/report/index.html and its PNGs (OUT: the store unless given); returns the index path. The paper's
    figures order the models by `a.ood`."""
    out = out or store
    figures = {"heatmap.png": heatmap(a), "curves.png": curves(a)}
    ood = a.ood
    if ood is not None:
        figures.update({"ood_heatmap.png": ood_heatmap(a, ood), "extremes.png": extremes(a, ood),
                        "scatter.png": scatter(a, ood)})
    diagnostic = [k for k in a.per_model.columns if k.split("/")[0] in a.diagnostic][:9]
    if diagnostic:
        figures["diagnostic_histograms.png"] = histograms(a, diagnostic)
    if "barrier_lo" in a.barriers:
        figures["intervals.png"] = intervals(a)
    if a.dynamics is not None:
        figures["dynamics.png"] = dynamics(a)
    plane_figure = planes(store, a)
    if plane_figure is not None:
        figures["planes.png"] = plane_figure
    for name, data in figures.items():
        out.put(f"report/{name}", data)
    supported, words = verdict(a)
    s = a.summary
    facts = pd.DataFrame([
        ("barriers", f"{a.metric} on {a.eval_set}, {s['n_models']} models"),
        ("clusters (paper's recipe: spectral, δ = 1, k = 2)", ", ".join(map(str, np.bincount(a.labels("paper"))))),
        ("clusters the eigengap suggests", f"{s['k_eigengap']} (δ = {s['delta_knn']:.3g}, from the data)"),
        ("agreement with average linkage (ARI)", f"{s['ari_paper_vs_linkage']:.2f}"),
        ("stability (ARI on random 80% subsets)", stability_words(s)),
        *([("NaN barriers", f"{s['nan_pairs']} pairs")] if s["nan_pairs"] else []),
        *([(f"{s['level']:.0%} bootstrap intervals", f"{s['bootstrap']} resamples, median width "
                                                     f"{s['median_interval_width']:.4f}")] if s.get("bootstrap") else [])],
        columns=["", ""])
    warnings = [line for line in text_summary(a).splitlines() if line.startswith("warning:")]
    section = lambda title, png, alt: (f'<h2>{title}</h2><img src="{png}" alt="{alt}">' if png in figures else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lmc-ray report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}}
table.t{{border-collapse:collapse}} table.t td,table.t th{{padding:3px 10px;text-align:left;white-space:nowrap}}
table.t tr:nth-child(even){{background:#f6f6f6}} .scroll{{overflow-x:auto;max-width:100%}} img{{max-width:100%}}
.verdict{{padding:.8em 1em;border-left:5px solid {"#2a7" if supported else "#d80"};background:#f6f6f6}}</style>
</head><body>
<h1>Linear mode connectivity: {len(a.names)} models</h1>
<p class="verdict">{html.escape(words)}</p>
{"".join(f'<p class="verdict">{html.escape(w)}</p>' for w in warnings)}
<h2>Clusters and their scores</h2>
<p>Mean ± standard deviation (range) over each cluster's models, each eval set scored whole.</p>
{_table(summary_table(a))}
{f"<h3>Correlation with the spectral score</h3>{_table(correlation_table(a))}" if len(a.correlations) else ""}
<h3>Clustering</h3>{_table(facts).replace("<thead>", '<thead style="display:none">')}
{section("Barrier matrix", "heatmap.png", "barrier heatmap")}
{section("Interpolation curves within and between clusters", "curves.png", "mean curves")}
{section(f"Ordered by {html.escape(ood or '')}", "ood_heatmap.png", "barriers by OOD score")}
{section("The best and worst models out of distribution", "extremes.png", "extremes")}
{section("Spectral score against the OOD score", "scatter.png", "scatter")}
{section("Diagnostic scores per cluster", "diagnostic_histograms.png", "histograms")}
{section("Barriers with bootstrap intervals", "intervals.png", "intervals")}
{section("Basins during training: who moved where", "dynamics.png", "dynamics")}
{section("Planes through three models", "planes.png", "planes")}
<h2>Per model</h2>{_table(a.per_model)}
<h2>Per cluster, every score</h2>{_table(a.per_cluster)}
</body></html>"""
    out.put("report/index.html", page.encode())
    return out.url_of("report", "index.html")
