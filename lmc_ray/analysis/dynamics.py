"""Basin commitment during training: a population swept at several saved steps (config `steps:`), clustered at
each step as the paper clusters its final models, the clusters matched from step to step, and who moved where.

The paper re-clusters its QQP models at 15k, 25k and 34,110 steps and follows each model between clusters; this is
that, from one store: STORE/dynamics.parquet (model, step, cluster, score) and a figure, one row per model and one
column per step.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from . import barriers as B
from . import clusters as C


def steps(models: list[dict]) -> list[str]:
    """The steps a store's models were saved at, in training order (numbers ascending, final last); [] without."""
    found = {m.get("step") for m in models} - {None}
    return sorted(found, key=lambda s: (s == "final", int(s) if s != "final" else 0))


def match(previous: dict[str, int], labels: dict[str, int]) -> dict[str, int]:
    """`labels` (model -> cluster at this step) renumbered so each cluster takes the number of the previous step's
    cluster it shares most models with (an assignment maximising the total overlap); clusters without a partner
    keep numbers after the previous ones."""
    mine, theirs = sorted(set(labels.values())), sorted(set(previous.values()))
    overlap = np.array([[sum(labels[m] == a and previous.get(m) == b for m in labels) for b in theirs] for a in mine])
    rows, cols = linear_sum_assignment(-overlap)
    renumber = {mine[r]: theirs[c] for r, c in zip(rows, cols)}
    extra = iter(range(max(theirs, default=-1) + 1, 10**6))
    renumber.update({a: next(extra) for a in mine if a not in renumber})
    return {m: renumber[c] for m, c in labels.items()}


def run(fp: dict, curves: pd.DataFrame, ends: pd.DataFrame, eval_set: str, metric: str = "loss",
        score: str | None = None) -> pd.DataFrame:
    """One row per (model, step): its cluster at that step (the paper's spectral clustering of that step's barrier
    matrix, numbered to follow the step before) and its score alone (`score`: eval_set/subset/metric of the
    endpoints; default the first diagnostic set's whole-set accuracy)."""
    models = fp["models"]
    diagnostic = [e["name"] for e in fp["eval_sets"] if e.get("role") == "diagnostic"]
    score = score or (f"{diagnostic[0]}/all/accuracy" if diagnostic else f"{eval_set}/all/accuracy")
    set_name, subset, column = score.rsplit("/", 2)
    scored = ends[(ends.eval_set == set_name) & (ends.subset == subset)].set_index("model")[column]
    bar = B.table(curves)
    rows, previous = [], {}
    for step in steps(models):
        names = [m["name"] for m in models if m.get("step") == step]
        base = {m["name"]: m["name"].rsplit("@", 1)[0] for m in models if m.get("step") == step}
        within = bar[bar.model_a.isin(names) & bar.model_b.isin(names)]
        labels = dict(zip((base[n] for n in names), C.paper(C.matrix(within, names, eval_set, metric)).tolist()))
        previous = match(previous, labels) if previous else labels
        rows += [{"model": base[n], "step": step, "cluster": previous[base[n]], "score": scored.get(n, np.nan)}
                 for n in names]
    return pd.DataFrame(rows).astype({"cluster": int})


def moved(df: pd.DataFrame) -> pd.DataFrame:
    """The models whose cluster changed between consecutive steps: model, from step, to step, from, to."""
    out = []
    for model, g in df.groupby("model", sort=True):
        seq = list(zip(g.step, g.cluster))
        out += [{"model": model, "step_from": s0, "step_to": s1, "cluster_from": c0, "cluster_to": c1}
                for (s0, c0), (s1, c1) in zip(seq, seq[1:]) if c0 != c1]
    return pd.DataFrame(out, columns=["model", "step_from", "step_to", "cluster_from", "cluster_to"])
