"""The analysis on a real store: barriers, clusters and a report with its figures."""
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmc_ray.analysis import findings, report
from lmc_ray.execution import local, plan
from lmc_ray.config import ConfigError
from lmc_ray.storage.store import Store

from conftest import ROOT
from test_ray_sweep import _two_sets


@pytest.fixture(scope="module")
def store(tmp_path_factory, population):
    path = tmp_path_factory.mktemp("an") / "store"
    local.run(plan.prepare(_two_sets(population, path)), progress=False)
    return path


def test_cluster_job_writes_barriers_clusters_and_report(store):
    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "cluster.py"), "--store", str(store)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "highest barriers:" in run.stdout and "report:" in run.stdout
    assert "Ordered by hans/all/accuracy" in (store / "report" / "index.html").read_text()
    bar = pd.read_parquet(store / "barriers.parquet")
    assert len(bar) == 6 * 2 * 2  # pairs × eval sets × {loss, error}
    assert list(bar.columns) == ["model_a", "model_b", "eval_set", "metric", "barrier", "endpoint_barrier",
                                 "midpoint_barrier", "area", "distance"]
    assert (bar.distance > 0).all() and bar.groupby(["model_a", "model_b"]).distance.nunique().eq(1).all()
    assert (bar.barrier >= 0).all() and (bar.barrier >= bar.endpoint_barrier - 1e-12).all()
    cl = pd.read_parquet(store / "clusters.parquet")
    assert set(cl.method) == {"paper", "spectral_knn_delta", "average_linkage"} and len(cl) == 3 * 4
    mat = pd.read_parquet(store / "barrier_matrix.parquet").set_index("model")
    assert np.allclose(mat.to_numpy(), mat.to_numpy().T) and (np.diag(mat.to_numpy()) == 0).all()
    html = (store / "report" / "index.html").read_text()
    # The paper's figures, ordered by the first diagnostic set's whole-set score (here hans/all/accuracy).
    for png in ("heatmap.png", "curves.png", "diagnostic_histograms.png", "ood_heatmap.png", "extremes.png",
                "scatter.png"):
        assert f'src="{png}"' in html
        assert (store / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_cluster_statistics_match_the_endpoints(store):
    a = findings.run(Store(str(store)))
    ends = pd.read_parquet(store / "endpoints")
    hans = ends[(ends.eval_set == "hans") & (ends.subset == "all")].set_index("model").accuracy
    key = "hans/all/accuracy"
    for c, g in a.per_model.groupby("cluster"):
        row = a.per_cluster[(a.per_cluster.metric == key) & (a.per_cluster.cluster == c)].iloc[0]
        assert row["mean"] == pytest.approx(hans.loc[g.model].mean())
        assert row["n"] == len(g)


def test_the_papers_correlation_is_its_own_computation(store):
    """`paper_delta1` is get_sc_centroid_dists (aNOnWhyMooS/connectivity) with δ = 1, written out again here
    from its source, then Pearson r with each model's score."""
    from scipy.stats import pearsonr
    from sklearn.cluster import k_means
    from sklearn.manifold import spectral_embedding

    a = findings.run(Store(str(store)))
    se = spectral_embedding(np.exp(-a.matrix ** 2 / (2.0 * 1.0 ** 2)), n_components=2, random_state=42,
                            drop_first=False)
    centers, _, _ = k_means(se, 2, random_state=42, n_init=10)  # the default n_init of the paper's sklearn (< 1.4)
    dists = [[float(np.linalg.norm(e - c)) for e in se] for c in centers]
    score = np.array(dists[0]) - np.array(dists[1])
    key = "hans/all/accuracy"
    got = a.correlations.set_index(["metric", "score"]).loc[(key, "paper_delta1")]
    assert got.pearson_r == pytest.approx(pearsonr(score, a.per_model[key].to_numpy())[0], abs=1e-9)
    assert set(a.correlations.score) == {"paper_delta1", "knn_delta"}


def test_an_unfinished_store_is_refused(tmp_path, population):
    p = plan.prepare(_two_sets(population[:3], tmp_path / "s"))
    local.run(p, progress=False)
    (tmp_path / "s" / "curves" / "pair-00000-00001.parquet").unlink()
    with pytest.raises(ConfigError, match="2 of 3 pairs stored"):
        findings.run(Store(str(tmp_path / "s")))
    # Grown by a second eval set and stopped after one of its three pair files: that set is incomplete.
    local.run(plan.prepare(p.cfg), progress=False)
    from dataclasses import replace

    nli2 = replace(p.cfg.eval_sets[0], name="nli2", max_examples=16)
    local.run(plan.prepare(replace(p.cfg, eval_sets=[*p.cfg.eval_sets, nli2])), progress=False)
    for f in sorted((tmp_path / "s" / "curves").glob("*-g1.parquet"))[1:]:
        f.unlink()
    with pytest.raises(ConfigError, match="eval set 'nli2' has 1 of 3 pairs stored; finish the sweep first"):
        findings.run(Store(str(tmp_path / "s")), "nli2")
    shutil.rmtree(tmp_path / "s" / "curves")  # stopped after the endpoints, before any pair
    with pytest.raises(ConfigError, match="0 of 3 pairs stored; finish the sweep first"):
        findings.run(Store(str(tmp_path / "s")))


PROBE = """<!doctype html><html><body><iframe id="f" src="index.html" width="1200" height="800"></iframe>
<pre id="out">pending</pre><script>
document.getElementById("f").onload = () => {
  const imgs = [...document.getElementById("f").contentDocument.images];
  const check = () => {
    if (!imgs.every(i => i.complete)) return setTimeout(check, 50);
    document.getElementById("out").textContent =
      "images " + imgs.length + " loaded " + imgs.filter(i => i.naturalWidth > 0).length;
  };
  check();
};
</script></body></html>"""


# The report in a frame of the window's width: its document must not scroll sideways; a wide table may, in
# its box.
LAYOUT = """<!doctype html><html><body style="margin:0"><iframe id="f" src="index.html"
style="width:1400px;height:1500px;border:0"></iframe><script>
document.getElementById("f").onload = () => {
  const d = document.getElementById("f").contentDocument;
  const over = [...d.querySelectorAll("body *")].filter(e => !e.closest(".scroll")
      && e.getBoundingClientRect().right > 1400 + 1);
  document.body.insertAdjacentHTML("beforeend", "<p>page " + d.documentElement.clientWidth + " widest-outside-scroll "
      + (over.length ? "bad " + over[0].tagName + " " + over[0].getBoundingClientRect().right : "ok") + "</p>");
};
</script></body></html>"""


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (CI installs it: apt-get install chromium)")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_a_real_browser(store, tmp_path):
    a = findings.run(Store(str(store)))
    index = Path(report.write(Store(str(store)), a))
    chrome = _chromium() + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1600"]

    def dom(page: str) -> str:
        """What `page`, placed beside the report so it may frame it, shows once its script ran."""
        probe = index.parent / "_probe.html"
        probe.write_text(page)
        try:
            return subprocess.run(chrome + ["--allow-file-access-from-files", "--virtual-time-budget=10000",
                                            "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                                  timeout=120).stdout
        finally:
            probe.unlink()

    assert "images 6 loaded 6" in dom(PROBE)  # heatmap, curves, by OOD score, extremes, scatter, histograms
    layout = dom(LAYOUT)
    width = re.search(r"page (\d+) widest-outside-scroll (\w+)", layout)  # 1400 less a scroll bar
    assert width and int(width.group(1)) > 1350 and width.group(2) == "ok", layout[-1500:]
    shot = tmp_path / "report.png"
    subprocess.run(chrome + [f"--screenshot={shot}", index.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1400) and pixels.std() > 10  # a rendered page, not a blank one
    html = index.read_text()
    assert 'class="verdict">Not supported: the recipe splits' in html  # four close copies: one basin
    assert "<th>nli/all/accuracy</th>" in html and "cluster 1" in html and "all models" in html


def test_nan_losses_are_stored_and_flagged_not_fatal(tmp_path, population):
    """Finite weights whose logits overflow to inf: the sweep stores NaN losses, the report names the pairs."""
    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "overflow"
    shutil.copytree(population[3], bad)
    state = load_file(bad / "model.safetensors")
    w = torch.zeros_like(state["classifier.weight"])
    w[0], w[1] = 3e38, -3e38  # finite, but any pooled feature sum beyond ±1.2 overflows the logits
    state["classifier.weight"] = w
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    path = tmp_path / "store"
    local.run(plan.prepare(_two_sets([*population[:3], bad], path)), progress=False)
    curves = pd.read_parquet(path / "curves")
    with_bad = curves[(curves.model_b == str(bad)) & (curves.subset == "all")]
    assert with_bad.loss.isna().any() and curves[curves.model_b != str(bad)].loss.notna().all()
    a = findings.run(Store(str(path)))
    assert a.summary["nan_pairs"] == 3
    warning = [line for line in findings.text_summary(a).splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "3 pairs have NaN barriers" in warning[0] and f"|{bad}" in warning[0]
    html = Path(report.write(Store(str(path)), a)).read_text()
    assert "3 pairs have NaN barriers" in html


def test_adaptive_alpha_stores_are_analysed_on_each_pairs_own_points(tmp_path, population):
    from lmc_ray.analysis import barriers

    path = tmp_path / "store"
    local.run(plan.prepare(_two_sets(population, path, refine=1)), progress=False)
    store = Store(str(path))
    a = findings.run(store, "nli")
    findings.write(store, a)
    report.write(store, a)
    curves = store.curves().to_table().to_pandas().query("subset == 'all' and eval_set == 'nli'")
    bar = pd.read_parquet(path / "barriers.parquet").query("eval_set == 'nli' and metric == 'loss'")
    for (ma, mb), g in curves.sort_values("alpha").groupby(["model_a", "model_b"]):
        assert len(g) == 5 + 2
        want = barriers.paper(g.loss.to_numpy(), g.alpha.to_numpy())
        assert bar[(bar.model_a == ma) & (bar.model_b == mb)].barrier.item() == pytest.approx(want, abs=1e-12)
    assert (path / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bootstrap_intervals_from_the_kept_per_example_values(tmp_path, population, store):
    path = tmp_path / "store"
    local.run(plan.prepare(_two_sets(population, path, per_example=True)), progress=False)
    # What is kept is exactly what each curve point averaged, endpoints included.
    curves = pd.read_parquet(path / "curves").query("subset == 'all'").set_index(["model_a", "model_b", "alpha",
                                                                                    "eval_set"])
    kept = pd.read_parquet(path / "examples" / "curves")
    ends = pd.read_parquet(path / "examples" / "endpoints")
    inner = kept.groupby(["model_a", "model_b", "alpha", "eval_set"]).agg(loss=("loss", "mean"), acc=("correct", "mean"))
    np.testing.assert_allclose(inner.loss, curves.loc[inner.index, "loss"], rtol=1e-6)
    np.testing.assert_allclose(inner.acc, curves.loc[inner.index, "accuracy"], rtol=1e-6)
    at0 = curves.xs(0.0, level="alpha").reset_index().groupby(["model_a", "eval_set"]).loss.first()
    np.testing.assert_allclose(ends.groupby(["model", "eval_set"]).loss.mean().loc[at0.index], at0, rtol=1e-6)

    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "analyse.py"), "--store", str(path), "--bootstrap", "300"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "95% bootstrap intervals (300 resamples of the examples)" in run.stdout
    bar = pd.read_parquet(path / "barriers.parquet")
    assert len(bar) == 6 * 2 * 2 and bar.barrier_lo.notna().all()
    assert (bar.barrier_lo <= bar.barrier_hi).all() and (bar.barrier_hi > bar.barrier_lo).any()
    inside = (bar.barrier_lo <= bar.barrier + 1e-12) & (bar.barrier <= bar.barrier_hi + 1e-12)
    assert inside.mean() >= 0.75
    # Seeded per pair: the same intervals again, and none of the other columns moved.
    again = findings.run(Store(str(path)), bootstrap=300).barriers
    pd.testing.assert_frame_equal(again.reset_index(drop=True), bar)
    assert (path / "report" / "intervals.png").read_bytes()[:4] == b"\x89PNG"
    assert 'src="intervals.png"' in (path / "report" / "index.html").read_text()

    # A store that kept no per-example values: one line, before any work.
    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "analyse.py"), "--store", str(store), "--bootstrap", "100"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "per_example: true" in run.stderr


def test_scores_from_elsewhere_join_by_name_or_by_run_number(store, tmp_path):
    """McCoy et al.'s per-run HANS accuracies for the feather BERTs: `Run 7` is the model named `..._7`."""
    from conftest import DATA

    names = findings.run(Store(str(store))).names
    feather = pd.read_csv(DATA / "mnli" / "feather_berts_hans_accuracy_by_run.csv", encoding="utf-8-sig")
    by_run = findings.scores(str(DATA / "mnli" / "feather_berts_hans_accuracy_by_run.csv"),
                             [f"feather_{k}" for k in (3, 0, 99)])
    assert by_run["scores/Lexical (nonent)"].tolist() == \
        [feather.set_index("Run").loc[f"Run {k}", "Lexical (nonent)"] for k in (3, 0, 99)]
    own = tmp_path / "own.csv"
    pd.DataFrame({"model": names[::-1], "ood": [0.1, 0.2, 0.3, 0.4]}).to_csv(own, index=False)
    a = findings.run(Store(str(store)), scores_file=str(own))
    assert a.per_model.set_index("model").loc[names, "scores/ood"].tolist() == [0.4, 0.3, 0.2, 0.1]
    assert set(a.per_cluster.metric) >= {"scores/ood"} and "scores/ood" in set(a.correlations.metric)
    with pytest.raises(ConfigError, match="no row of column 'model' names a model of the store"):
        findings.scores(str(own), ["zzz"])
    pd.DataFrame({"model": [names[0], names[0]], "ood": [0.1, 0.2]}).to_csv(own, index=False)
    with pytest.raises(ConfigError, match=f"model {names[0]!r} has 2 rows; give one row per model"):
        findings.scores(str(own), names)


def test_clustering_on_the_error_barrier(store):
    """--metric error: the matrix is the paper's barrier of 1 − accuracy, read from barriers.parquet's error rows."""
    a = findings.run(Store(str(store)), metric="error")
    rows = a.barriers.query("metric == 'error' and eval_set == @a.eval_set")
    idx = {n: i for i, n in enumerate(a.names)}
    for r in rows.itertuples():
        assert a.matrix[idx[r.model_a], idx[r.model_b]] == a.matrix[idx[r.model_b], idx[r.model_a]] == r.barrier
    assert a.metric == "error" and not np.allclose(a.matrix, findings.run(Store(str(store))).matrix)


def test_a_read_only_store_is_refused_in_one_line_and_analysed_into_out(tmp_path, store):
    """The store bind-mounted read-only (a real read-only file system, in a private mount namespace): `analyse`
    says so in one line and points to --out; with --out everything goes there, the store is untouched, and no
    empty _tmp/ is left in either."""
    ro = tmp_path / "ro"
    shutil.copytree(store, ro, ignore=shutil.ignore_patterns("report", "barrier*.parquet", "clusters.parquet"))
    before = sorted(p.relative_to(ro) for p in ro.rglob("*"))
    analyse = f"{sys.executable} {ROOT / 'jobs' / 'analyse.py'} --store {ro}"

    def in_read_only(args: str) -> subprocess.CompletedProcess:
        script = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && {analyse} {args}"
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                              capture_output=True, text=True, timeout=300)

    start = time.monotonic()
    run = in_read_only("")
    assert run.returncode == 2 and time.monotonic() - start < 10, run.stderr[-2000:]
    assert run.stderr.splitlines() == [f"lmc-ray: error: store {str(ro)!r}: not writable (Read-only file system); "
                                       "write the analysis elsewhere with --out DIR"]
    out = tmp_path / "out"
    run = in_read_only(f"--out {out}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"report: {out}/report/index.html" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["barrier_matrix.parquet", "barriers.parquet", "clusters.parquet",
                                                     "report"]
    assert "heatmap.png" in (out / "report" / "index.html").read_text()
    assert sorted(p.relative_to(ro) for p in ro.rglob("*")) == before
    # Into a writable store too, nothing but the tables and report/ is added.
    run = subprocess.run(analyse.split(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and not (ro / "_tmp").exists(), run.stderr[-2000:]


def _synthetic(between: float, within: float, n: int = 8, split: int = 4):
    """An Analysis of a synthetic barrier matrix: two blocks of models, `within` inside, `between` across,
    endpoint losses 0.5."""
    from lmc_ray.analysis import clusters as C

    names = [f"m{k}" for k in range(n)]
    side = np.arange(n) < split
    jitter = np.random.default_rng(0).uniform(0.9, 1.1, (n, n))
    m = np.where(side[:, None] == side[None, :], within, between) * (jitter + jitter.T) / 2
    np.fill_diagonal(m, 0)
    clusters, summary = C.analyse(m, names)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    barriers = pd.DataFrame({"model_a": [names[i] for i, _ in pairs], "model_b": [names[j] for _, j in pairs],
                             "eval_set": "nli", "metric": "loss", "barrier": [m[i, j] for i, j in pairs]})
    curves = pd.DataFrame([{"model_a": names[i], "model_b": names[j], "alpha": al, "eval_set": "nli",
                            "subset": "all", "loss": 0.5} for i, j in pairs for al in (0.0, 1.0)])
    return findings.Analysis(names, "nli", "loss", curves, barriers, m, clusters, summary, pd.DataFrame(),
                             pd.DataFrame(), pd.DataFrame(), [], [])


def test_the_verdict_says_whether_the_data_supports_basins():
    supported, words = findings.verdict(_synthetic(between=0.3, within=0.01))
    assert supported and words.startswith("Supported: 2 clusters of 4, 4 models;"), words
    supported, words = findings.verdict(_synthetic(between=0.0004, within=0.0001))
    assert not supported and "barriers between them are tiny" in words and "one basin" in words, words
    supported, words = findings.verdict(_synthetic(between=0.03, within=0.025))
    assert not supported and "hardly above those within" in words, words
    supported, words = findings.verdict(_synthetic(between=0.3, within=0.01, n=3, split=1))
    assert not supported and "stability cannot be measured" in words, words


def test_names_with_dollar_signs_are_drawn_as_text(tmp_path, population):
    """Matplotlib reads $…$ as math: a model named that way broke the report."""
    names = ["$m_0$", "m$1", r"a$\nope{$c"]  # the last is no valid math: it raised
    from dataclasses import replace

    from lmc_ray.config import ModelSpec

    cfg = _two_sets(population[:3], tmp_path / "s")
    cfg = replace(cfg, models=[ModelSpec(m.ref, n) for m, n in zip(cfg.models, names)])
    local.run(plan.prepare(cfg), progress=False)
    a = findings.run(Store(str(tmp_path / "s")))
    page = Path(report.write(Store(str(tmp_path / "s")), a)).read_text()
    assert sorted(a.names) == sorted(names) and "heatmap.png" in page


def test_figure_one_is_the_mean_curve_of_each_group_of_pairs_as_the_paper_draws_it(store):
    """The k best ("gen.") and k worst ("heur.") by the OOD score, one mean loss curve per group of pairs, each
    gen.-to-heur. line read from its gen. model; at most half the models per side (4 models: 2 and 2)."""
    a = findings.run(Store(str(store)))
    groups = report.extreme_groups(a, "hans/all/accuracy", k=5)
    ranked = a.per_model.sort_values("hans/all/accuracy", kind="stable").model.tolist()
    heur, gen = ranked[:2], ranked[2:]
    assert set(groups.eval_set) == {"nli", "hans"}
    pairs = groups.drop_duplicates(["eval_set", "group"]).set_index(["eval_set", "group"]).pairs
    assert pairs.loc["nli"].to_dict() == {"gen. to gen.": 1, "heur. to heur.": 1, "gen. to heur.": 4}
    c = a.curves[(a.curves.subset == "all") & (a.curves.eval_set == "nli")]
    lines = []
    for g in gen:
        for h in heur:
            one = c[((c.model_a == g) & (c.model_b == h)) | ((c.model_a == h) & (c.model_b == g))]
            flip = one.model_a.iloc[0] == h
            lines.append(one.assign(alpha=1 - one.alpha if flip else one.alpha).sort_values("alpha").loss.to_numpy())
    got = groups[(groups.eval_set == "nli") & (groups.group == "gen. to heur.")].sort_values("alpha")
    np.testing.assert_allclose(got.loss, np.mean(lines, axis=0), rtol=1e-12)
    half = 1.96 * np.std(lines, axis=0, ddof=1) / 2
    np.testing.assert_allclose(got.hi - got.loss, half, rtol=1e-9)
    assert (got.lo <= got.loss).all() and got.alpha.tolist() == sorted(set(c.alpha))


def test_the_sweep_configs_ood_score_orders_the_paper_figures_unless_analyse_names_another(tmp_path, population):
    """`ood` travels in run.json beside the store's identity (a store swept without it resumes with it); `analyse`
    uses it, `--ood` overrides it, and a score the analysis lacks is refused before anything is written."""
    path = tmp_path / "store"
    local.run(plan.prepare(_two_sets(population[:3], path)), progress=False)
    local.run(plan.prepare(_two_sets(population[:3], path, ood="hans/heuristic,gold_label=lexical_overlap,"
                                                                  "non-entailment/accuracy")), progress=False)
    assert Store(str(path)).meta()["analysis"] == {"ood": "hans/heuristic,gold_label=lexical_overlap,"
                                                          "non-entailment/accuracy"}

    def analyse(*extra):
        return subprocess.run([sys.executable, str(ROOT / "jobs" / "analyse.py"), "--store", str(path), *extra],
                              capture_output=True, text=True, timeout=300)

    assert analyse().returncode == 0
    html = (path / "report" / "index.html").read_text()
    assert "Ordered by hans/heuristic,gold_label=lexical_overlap,non-entailment/accuracy" in html
    assert analyse("--ood", "nli/all/accuracy").returncode == 0
    assert "Ordered by nli/all/accuracy" in (path / "report" / "index.html").read_text()
    out = tmp_path / "elsewhere"
    bad = analyse("--ood", "nli/all/mcc", "--out", str(out))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        bad.stderr.strip().splitlines()[0]] and "--ood 'nli/all/mcc': no such per-model score" in bad.stderr
    assert not (out / "barriers.parquet").exists()
