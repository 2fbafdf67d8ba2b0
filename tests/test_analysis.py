"""The cluster job on a real store: barriers, clusters and a report with its figures."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lmc_ray import analysis, local, plan
from lmc_ray.config import ConfigError
from lmc_ray.store import Store

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
    bar = pd.read_parquet(store / "barriers.parquet")
    assert len(bar) == 6 * 2 * 2  # pairs × eval sets × {loss, error}
    assert list(bar.columns) == ["model_a", "model_b", "eval_set", "metric", "barrier", "endpoint_barrier",
                                 "midpoint_barrier", "area"]
    assert (bar.barrier >= 0).all() and (bar.barrier >= bar.endpoint_barrier - 1e-12).all()
    cl = pd.read_parquet(store / "clusters.parquet")
    assert set(cl.method) == {"paper", "spectral_knn_delta", "average_linkage"} and len(cl) == 3 * 4
    mat = pd.read_parquet(store / "barrier_matrix.parquet").set_index("model")
    assert np.allclose(mat.to_numpy(), mat.to_numpy().T) and (np.diag(mat.to_numpy()) == 0).all()
    html = (store / "report" / "index.html").read_text()
    for png in ("heatmap.png", "curves.png", "diagnostic_histograms.png"):
        assert f'src="{png}"' in html
        assert (store / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_cluster_statistics_match_the_endpoints(store):
    a = analysis.run(Store(str(store)))
    ends = pd.read_parquet(store / "endpoints")
    hans = ends[(ends.eval_set == "hans") & (ends.subset == "all")].set_index("model").accuracy
    key = "hans/all/accuracy"
    for c, g in a.per_model.groupby("cluster"):
        row = a.per_cluster[(a.per_cluster.metric == key) & (a.per_cluster.cluster == c)].iloc[0]
        assert row["mean"] == pytest.approx(hans.loc[g.model].mean())
        assert row["n"] == len(g)


def test_an_unfinished_store_is_refused(tmp_path, population):
    p = plan.prepare(_two_sets(population[:3], tmp_path / "s"))
    local.run(p, progress=False)
    (tmp_path / "s" / "curves" / "pair-00000-00001.parquet").unlink()
    with pytest.raises(ConfigError, match="2 of 3 pairs stored"):
        analysis.run(Store(str(tmp_path / "s")))
