"""From a finished store to the paper's findings: barriers, basins, and how each basin generalizes."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from . import barriers as B
from . import clusters as C
from . import dynamics
from ..config import on_line
from ..errors import ConfigError, cause
from ..progress import track
from ..storage.store import Store


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
    # metric, score (paper_delta1: the paper's spectral score, δ = 1; knn_delta: δ from the data), pearson_r, p_value
    correlations: pd.DataFrame
    diagnostic: list[str]  # eval sets with role diagnostic
    endpoints_only: list[str]  # eval sets scored once per model, never on the lines
    # A population swept at several training steps: model, step, cluster, score (dynamics.run); the fields above
    # are then about the last step's models.
    dynamics: pd.DataFrame | None = None
    ood: str | None = None  # the per-model score the basins are tested on and the paper's figures ordered by

    def labels(self, method: str = "paper") -> np.ndarray:
        sel = self.clusters[self.clusters.method == method].set_index("model").cluster
        return sel.loc[self.names].to_numpy()


class BarriersOnly(Exception):
    """The store's sweep chose its pairs: basins need every pair, so only the barriers (`.barriers`) are
    computed. Its message is one line for the user."""

    def __init__(self, message: str, barriers: pd.DataFrame):
        super().__init__(message)
        self.barriers = barriers


def _line_sets(fp: dict) -> tuple[list[str], list[str]]:
    """The names of a store's eval sets on the lines, and of those scored once per model (config.on_line)."""
    on = set(on_line(fp["eval_sets"]))
    names = [e["name"] for e in fp["eval_sets"]]
    return [n for k, n in enumerate(names) if k in on], [n for k, n in enumerate(names) if k not in on]


def read(store: Store) -> tuple[list[str], dict, pd.DataFrame, pd.DataFrame]:
    """The models to analyse (those of the store's last run: a model left out of it keeps its data, out of the
    analysis; of a population swept at several steps, the last step's), that run's configuration, and the curves
    and endpoints of every model of that run."""
    fp = store.meta()["fingerprint"]
    active = [m["name"] for m in fp["models"]]
    last = (dynamics.steps(fp["models"]) or [None])[-1]
    names = [m["name"] for m in fp["models"] if m.get("step") == last]
    curves, ends = store.curves().to_table().to_pandas(), store.endpoints().to_table().to_pandas()
    return (names, fp, curves[curves.model_a.isin(active) & curves.model_b.isin(active)].reset_index(drop=True),
            ends[ends.model.isin(active)].reset_index(drop=True))


def intervals(store: Store, fp: dict, n_boot: int, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """A bootstrap interval on each pair's barrier (paper's definition), per eval set, for loss and error,
    from the per-example values the sweep kept. Each pair's draw is seeded by its indices: reproducible,
    whatever order the pairs are read in."""
    alphas = set(fp["alphas"])
    ends: dict[int, pd.DataFrame] = {}
    line = _line_sets(fp)[0]
    names = {m["name"] for m in fp["models"]}

    def endpoint(k: int, alpha: float) -> pd.DataFrame:
        if k not in ends:
            df = store.read_examples(k).to_pandas()
            ends[k] = df[df.eval_set.isin(line)]  # endpoints_only sets have no line to put an interval on
        return ends[k].assign(alpha=alpha)

    pairs = sorted(store.done_pairs())
    rows = []
    for i, j in track(pairs, len(pairs), "bootstrap", "pair"):
        inner = store.read_examples(i, j).to_pandas()
        a, b = inner.model_a.iloc[0], inner.model_b.iloc[0]
        if not {a, b} <= names:  # a model left out of the last run
            continue
        first, last = (i, j) if endpoint(i, 0.0).model.iloc[0] == a else (j, i)  # which end is α = 0
        df = pd.concat([inner, *(endpoint(k, al) for k, al in ((first, 0.0), (last, 1.0)) if al in alphas)])
        for s, (name, g) in enumerate(df.groupby("eval_set", sort=True)):
            loss = g.pivot(index="alpha", columns="example", values="loss")
            error = 1.0 - g.pivot(index="alpha", columns="example", values="correct")
            counts = B.resample(loss.shape[1], n_boot, np.random.default_rng([seed, i, j, s]))
            x = loss.index.to_numpy()
            for metric, values in (("loss", loss), ("error", error)):
                lo, hi = B.interval(values.to_numpy(), x, counts, level)
                rows.append({"model_a": a, "model_b": b, "eval_set": name, "metric": metric,
                             "barrier_lo": lo, "barrier_hi": hi})
    return pd.DataFrame(rows)


def scores(path: str, names: list[str]) -> pd.DataFrame:
    """Per-model results from elsewhere (CSV or Parquet: a first column naming the model, then numeric columns),
    indexed by model name, columns prefixed `scores/`. A row matches a model by its name, or else by the number
    it ends with (McCoy et al.'s `Run 7` is `feather_7`)."""
    try:
        df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path, encoding="utf-8-sig")
    except Exception as e:
        raise ConfigError(f"scores {path!r}: cannot read ({cause(e)})") from None
    key, values = df.columns[0], df.select_dtypes("number")
    if values.empty:
        raise ConfigError(f"scores {path!r}: no numeric column besides {key!r}")
    rows = [str(k) for k in df[key]]
    twice = next((r for r in rows if r in names and rows.count(r) > 1), None)
    if twice is not None:
        raise ConfigError(f"scores {path!r}: model {twice!r} has {rows.count(twice)} rows; give one row per model")
    index = {n: rows.index(n) for n in names if n in rows}
    if not index:
        by_number = {_trailing_number(r): k for k, r in enumerate(rows)}
        index = {n: by_number[_trailing_number(n)] for n in names if _trailing_number(n) in by_number.keys() - {None}}
    if not index:
        raise ConfigError(f"scores {path!r}: no row of column {key!r} names a model of the store (e.g. {names[0]!r})")
    out = values.iloc[[index[n] for n in index]].set_axis(list(index))
    return out.add_prefix("scores/").reindex(names).rename_axis("model")


def _trailing_number(s: str) -> str | None:
    m = re.search(r"(\d+)\D*$", s)
    return m.group(1) if m else None


def run(store: Store, eval_set: str | None = None, metric: str = "loss", bootstrap: int | None = None,
        level: float = 0.95, scores_file: str | None = None, ood: str | None = None) -> Analysis:
    """`bootstrap` replicates per barrier interval: default 1000 where the sweep kept per-example values;
    `scores_file`: per-model results from elsewhere, joined to the clusters like the store's own (see scores);
    `ood`: the per-model score the basins are tested on (choose_ood)."""
    names, fp, every_curve, every_end = read(store)
    curves = every_curve[every_curve.model_a.isin(names) & every_curve.model_b.isin(names)]
    ends = every_end[every_end.model.isin(names)]
    n_pairs = curves.groupby(["model_a", "model_b"]).ngroups
    if fp.get("pairs", "all") != "all":
        raise BarriersOnly(f"store {store.url!r} swept chosen pairs ({fp['pairs']}): barriers of its {n_pairs} stored "
                           f"pairs are in barriers.parquet; basins, correlations and the report need every pair of the "
                           f"{len(names)} models, so they are not computed", B.table(curves))
    want = len(names) * (len(names) - 1) // 2
    sets = _line_sets(fp)[0]
    for name in sets:  # per set: a set added to a grown store has its own files, and a pair may lack them
        got = curves[curves.eval_set == name].groupby(["model_a", "model_b"]).ngroups
        if got < want:
            where = f"eval set {name!r} has " if len(sets) > 1 else ""
            raise ConfigError(f"store {store.url!r}: {where}{got} of {want} pairs stored; finish the sweep first "
                              "(rerun it)")
    eval_set = eval_set or sets[0]
    if eval_set not in sets:
        raise ConfigError(f"eval set {eval_set!r} has no lines in the store (its line sets: {', '.join(sets)})")
    if metric not in ("loss", "error"):
        raise ConfigError(f"metric {metric!r}: use loss or error")
    bootstrap = (1000 if fp.get("per_example") else 0) if bootstrap is None else bootstrap
    if bootstrap < 0 or not 0 < level < 1:
        raise ConfigError(f"bootstrap {bootstrap} at level {level}: need a non-negative count and 0 < level < 1")
    if bootstrap and not fp.get("per_example"):
        raise ConfigError(f"store {store.url!r} kept no per-example losses, which bootstrap intervals need; "
                          "sweep with per_example: true (--per-example)")
    bar = B.table(curves)
    if bootstrap:
        bar = bar.merge(intervals(store, fp, bootstrap, level), on=["model_a", "model_b", "eval_set", "metric"])
    mat = C.matrix(bar, names, eval_set, metric)
    clusters, summary = C.analyse(mat, names)
    chosen = bar[(bar.metric == metric) & (bar.eval_set == eval_set)]
    summary.update(eval_set=eval_set, metric=metric, n_models=len(names), nan_pairs=int(chosen.barrier.isna().sum()))
    if bootstrap:
        summary.update(bootstrap=bootstrap, level=level,
                       median_interval_width=float((chosen.barrier_hi - chosen.barrier_lo).median()))

    # Generalization: each model alone (its endpoint rows): every subset of the diagnostic sets, and the
    # whole of the in-domain ones (do the basins agree in-domain while differing out of distribution?).
    diag_sets = [e["name"] for e in fp["eval_sets"] if e.get("role") == "diagnostic"]
    ends = ends[ends.eval_set.isin(diag_sets) | (ends.subset == "all")]
    wide = pd.concat([
        ends[ends.eval_set == e["name"]].assign(key=lambda d, m=m: d.eval_set + "/" + d.subset + "/" + m)
        .pivot_table(index="model", columns="key", values=m)
        for e in fp["eval_sets"] for m in e.get("metrics", ["accuracy"])], axis=1).reindex(names)
    if scores_file:
        wide = pd.concat([wide, scores(scores_file, names)], axis=1)
    paper_labels = C.paper(mat)
    per_model = wide.assign(cluster=paper_labels).reset_index()
    ood = choose_ood(store.meta().get("analysis", {}).get("ood"), ood, list(wide.columns), diag_sets,
                     _line_sets(fp)[1])
    if ood is not None:  # do the basins differ on it? (one cluster, or a constant score: no test)
        score = per_model[ood].to_numpy(dtype=float)
        summary["ood"] = {"score": ood, "means": {int(c): float(np.nanmean(score[paper_labels == c]))
                                                  for c in np.unique(paper_labels)},
                          "p_value": C.permutation_p(paper_labels, score)}
    stats = []
    for key in wide.columns:
        for c, g in per_model.groupby("cluster"):
            v = g[key].to_numpy()
            stats.append({"metric": key, "cluster": int(c), "n": len(v), "mean": np.nanmean(v), "std": np.nanstd(v),
                          "min": np.nanmin(v), "max": np.nanmax(v)})
    # The paper's score uses δ = 1 (get_sc_centroid_dists); with small barriers δ from the data separates more.
    spectral = {"paper_delta1": C.spectral_score(mat, 1.0), "knn_delta": C.spectral_score(mat, C.knn_delta(mat))}
    # A score every model shares (a subset all get right) correlates with nothing: left out, not NaN.
    varied = [key for key in wide.columns if np.nanstd(wide[key].to_numpy(dtype=float)) > 0]
    corr = [{"metric": key, "score": name,
             **dict(zip(("pearson_r", "p_value"), C.correlation(score, wide[key].to_numpy())))}
            for key in varied for name, score in spectral.items()]
    moves = (dynamics.run(fp, every_curve, every_end, eval_set, metric) if len(dynamics.steps(fp["models"])) > 1
             else None)
    return Analysis(names, eval_set, metric, curves, bar, mat, clusters, summary, per_model, pd.DataFrame(stats),
                    pd.DataFrame(corr, columns=["metric", "score", "pearson_r", "p_value"]), diag_sets,
                    _line_sets(fp)[1], moves, ood)


def choose_ood(stored: str | None, asked: str | None, scores: list[str], diagnostic: list[str],
               endpoints_only: list[str]) -> str | None:
    """The per-model score the basins are tested on: `asked` (analyse --ood), else the sweep config's `ood`
    (`stored`, from run.json), else the first diagnostic set's whole-set score (a set scored on all its rows,
    endpoints_only, first). A named score the analysis lacks is refused in one line."""
    chosen, where = (asked, "--ood") if asked else (stored, "the sweep config's ood") if stored else (None, "")
    if chosen is None:
        whole = [k for k in scores if k.split("/")[1:2] == ["all"] and k.split("/")[0] in diagnostic]
        return ([k for k in whole if k.split("/")[0] in endpoints_only] or whole or [None])[0]
    if chosen not in scores:
        raise ConfigError(f"{where} {chosen!r}: no such per-model score (have: {', '.join(scores)})")
    return chosen


def plane_triples(a: Analysis, k: int = 1) -> list[list[str]]:
    """Up to k triples for planes through a basin boundary: two models of the largest cluster (the pair with the
    lowest barrier between them) and the model of another cluster with the highest barrier to the first. None when
    the paper's recipe found one cluster only."""
    labels = a.labels()
    big = np.bincount(labels).argmax()
    inside = [i for i in range(len(a.names)) if labels[i] == big]
    outside = [i for i in range(len(a.names)) if labels[i] != big]
    if len(inside) < 2 or not outside:
        return []
    m = np.nan_to_num(a.matrix, nan=np.inf)
    pairs = sorted((m[i, j], i, j) for i in inside for j in inside if i < j)
    out = []
    for _, i, j in pairs[:k]:
        far = max(outside, key=lambda o: (m[i, o], -o))
        out.append([a.names[i], a.names[j], a.names[far]])
    return out


def write(out: Store, a: Analysis | BarriersOnly) -> None:
    """barriers.parquet, and of a whole analysis clusters.parquet and barrier_matrix.parquet, into `out` (the
    store itself, beside the curves, or another folder), each written atomically like the curves."""
    tables = [("barriers.parquet", a.barriers)]
    if isinstance(a, Analysis):
        matrix = pd.DataFrame(a.matrix, columns=a.names).assign(model=a.names)[["model", *a.names]]
        tables += [("barrier_matrix.parquet", matrix),
                   ("clusters.parquet", a.clusters.assign(eval_set=a.eval_set, metric=a.metric)),
                   *([("dynamics.parquet", a.dynamics)] if a.dynamics is not None else [])]
    for rel, df in tables:
        out.put_table(rel, pa.Table.from_pandas(df, preserve_index=False))


# Below these the data does not support basins: barriers between clusters under 1% of the models' own loss (or
# one point of error), hardly above those within, or a split that changes when a fifth of the models is left out.
TINY, SEPARATION, STABLE = 0.01, 2.0, 0.6


def verdict(a: Analysis) -> tuple[bool, str]:
    """Whether the data supports the basins the paper's recipe found, and why, in plain words."""
    labels = a.labels("paper")
    sizes = np.bincount(labels)
    if len(sizes) < 2:
        return False, f"One basin: the paper's recipe puts all {len(a.names)} models in one cluster."
    cluster = dict(zip(a.names, labels))
    bar = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric)]
    across = bar.model_a.map(cluster) != bar.model_b.map(cluster)
    between, within = bar.barrier[across].median(), bar.barrier[~across].median()
    ends = a.curves[(a.curves.eval_set == a.eval_set) & (a.curves.subset == "all") & a.curves.alpha.isin([0.0, 1.0])]
    scale = float(ends.loss.mean()) if a.metric == "loss" else 1.0
    split = f"{len(sizes)} clusters of {', '.join(map(str, sizes))} models"
    stability = a.summary["stability_paper"]
    if not between >= TINY * scale:
        return False, (f"Not supported: the recipe splits the models into {split}, but the barriers between them are "
                       f"tiny (median {between:.4g}, under {TINY:.0%} of the models' own {a.metric} of "
                       f"{scale:.3g}): the models are linearly connected, one basin.")
    if within > 0 and between < SEPARATION * within:
        return False, (f"Not supported: {split}, but the barriers between clusters (median {between:.4g}) are "
                       f"hardly above those within (median {within:.4g}).")
    if np.isnan(stability):
        return False, (f"Not established: {split}, barriers between clusters {between:.4g} (median) against "
                       f"{within:.4g} within; with {len(a.names)} models the split's stability cannot be measured "
                       "(it needs at least 4).")
    if stability < STABLE:
        return False, (f"Not supported: {split}, but the split is unstable: clustering random 80% subsets of the "
                       f"models agrees with it at ARI {stability:.2f} on average (1 = always the same).")
    return True, (f"Supported: {split}; barriers between clusters (median {between:.4g}) are "
                  f"{between / within if within > 0 else float('inf'):.1f}× those within (median {within:.4g}), and "
                  f"the split holds on random 80% subsets of the models (ARI {stability:.2f}).")


def stability_words(summary: dict) -> str:
    v = summary["stability_paper"]
    return "not measurable (fewer than 4 models)" if np.isnan(v) else f"{v:.2f}"


def text_summary(a: Analysis) -> str:
    s = a.summary
    lines = [verdict(a)[1], f"{s['n_models']} models, barriers on {a.eval_set} ({a.metric}); "
             f"paper's recipe: {np.bincount(a.labels('paper')).tolist()} models per cluster; "
             f"eigengap suggests k = {s['k_eigengap']} (δ = {s['delta_knn']:.3g}); "
             f"ARI paper vs linkage {s['ari_paper_vs_linkage']:.2f}; stability {stability_words(s)}"]
    top = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric)].nlargest(5, "barrier")
    lines.append("highest barriers: " + "; ".join(f"{r.model_a}|{r.model_b} {r.barrier:.4f}" for r in top.itertuples()))
    r = a.correlations.set_index(["metric", "score"]).pearson_r
    for key in a.per_cluster.metric.unique():
        sub = a.per_cluster[a.per_cluster.metric == key]
        means = ", ".join(f"cluster {c}: {m:.3f}±{sd:.3f}" for c, m, sd in zip(sub.cluster, sub["mean"], sub["std"]))
        lines.append(f"{key}: {means}; " + (f"Pearson r with the spectral score {r[key, 'paper_delta1']:.2f} "
                                            f"(paper's, δ = 1), {r[key, 'knn_delta']:.2f} (δ from the data)"
                                            if (key, "knn_delta") in r.index else "the same for every model"))
    if s.get("ood"):
        o = s["ood"]
        means = ", ".join(f"cluster {c}: {m:.3f}" for c, m in o["means"].items())
        test = f"permutation p = {o['p_value']:.3f}" if np.isfinite(o["p_value"]) else "no test (one cluster or one value)"
        lines.append(f"basins on {o['score']} (paper's clusters): {means}; {test}")
    if s.get("bootstrap"):
        lines.append(f"{s['level']:.0%} bootstrap intervals ({s['bootstrap']} resamples of the examples): median width "
                     f"{s['median_interval_width']:.4f}; barrier_lo / barrier_hi in barriers.parquet")
    if a.dynamics is not None:
        moves = dynamics.moved(a.dynamics)
        order = list(dict.fromkeys(a.dynamics.step))
        lines.append(f"dynamics over steps {', '.join(order)}: models per cluster " + "; ".join(
            f"{step}: {a.dynamics[a.dynamics.step == step].cluster.value_counts().sort_index().tolist()}"
            for step in order) + f"; {moves.model.nunique()} of {a.dynamics.model.nunique()} models changed cluster"
            + (": " + ", ".join(f"{r.model} {r.cluster_from}→{r.cluster_to} after {r.step_from}"
                                for r in moves.head(12).itertuples()) if len(moves) else ""))
    if s["nan_pairs"]:
        sel = a.barriers[(a.barriers.eval_set == a.eval_set) & (a.barriers.metric == a.metric) & a.barriers.barrier.isna()]
        shown = "; ".join(f"{r.model_a}|{r.model_b}" for r in sel.head(10).itertuples())
        lines.append(f"warning: {s['nan_pairs']} pairs have NaN barriers (NaN or inf losses along the line; treated as "
                     f"the largest barrier when clustering): {shown}{' ...' if len(sel) > 10 else ''}")
    return "\n".join(lines)
