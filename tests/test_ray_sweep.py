"""The sweep through a real local Ray instance, against the in-process core on the same work."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from lmc_ray import config, local, plan, ray_sweep

from conftest import DATA, sweep_config
from test_models import permuted_copy

HANS = DATA / "hans" / "heuristics_evaluation_set.regenerated.tsv"


def _two_sets(models, store, **over):
    cfg = sweep_config(models, store, **over)
    cfg["eval_sets"][0]["subsets"] = ["gold_label"]
    cfg["eval_sets"].append({
        "name": "hans", "path": str(HANS), "text": ["sentence1", "sentence2"], "label": "gold_label",
        "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]},
        "subsets": [["heuristic", "gold_label"]], "max_examples": 48, "role": "diagnostic"})
    return config.from_dict(cfg)


def _table(store):
    df = pd.read_parquet(os.path.join(store, "curves"))
    return df.sort_values(["model_a", "model_b", "eval_set", "subset", "alpha"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, population):
    """The whole sweep computed in-process, without Ray."""
    store = tmp_path_factory.mktemp("ref") / "store"
    local.run(plan.prepare(_two_sets(population, store)), progress=False)
    return _table(store)


def test_ray_sweep_is_complete_and_equals_the_core(ray_local, tmp_path, population, reference):
    cfg = _two_sets(population, tmp_path / "store", actors=2)
    ray_sweep.run(plan.prepare(cfg), progress=False)
    got = _table(cfg.store)
    n, n_alpha = len(population), 5
    subsets = 1 + 3 + 1 + 1  # nli: all + 3 labels; hans: all + the one heuristic,label pair in its first 48 rows
    assert len(got) == n * (n - 1) // 2 * n_alpha * subsets
    assert not got.duplicated(["model_a", "model_b", "alpha", "eval_set", "subset"]).any()
    assert got.groupby(["model_a", "model_b"]).size().nunique() == 1
    pd.testing.assert_frame_equal(got, reference, check_exact=False, atol=1e-6, rtol=0)
    # The endpoints in different pairs are the same single evaluation of each model.
    ends = got[got.alpha == 0.0].groupby(["model_a", "eval_set", "subset"]).loss.nunique()
    assert (ends == 1).all()
    assert {"hans"} <= set(got.eval_set) and got.alpha.dtype == np.float64


def test_resume_computes_only_missing_pairs(ray_local, tmp_path, population, reference):
    store = tmp_path / "store"
    cfg = _two_sets(population, store, actors=2)
    ray_sweep.run(plan.prepare(cfg), progress=False)
    curves = store / "curves"
    # An interrupted run: two pairs and one endpoint never written.
    (curves / "pair-00000-00003.parquet").unlink()
    (curves / "pair-00001-00002.parquet").unlink()
    (store / "endpoints" / "model-00002.parquet").unlink()
    before = {f.name: f.stat().st_mtime_ns for f in curves.iterdir()}
    p = plan.prepare(_two_sets(population, store, actors=2))
    assert p.pending == [(0, 3), (1, 2)] and p.missing_endpoints() == [2]
    ray_sweep.run(p, progress=False)
    after = {f.name: f.stat().st_mtime_ns for f in curves.iterdir()}
    assert sorted(set(after) - set(before)) == ["pair-00000-00003.parquet", "pair-00001-00002.parquet"]
    assert all(after[k] == v for k, v in before.items())  # nothing recomputed
    pd.testing.assert_frame_equal(_table(store), reference, check_exact=False, atol=1e-6, rtol=0)


def test_one_actor_per_model_and_permuted_labels(ray_local, tmp_path, population, reference):
    """A checkpoint listing its classes in another order gives the same curves once mapped by name."""
    models = list(population)
    models[3] = permuted_copy(population[3], tmp_path / os.path.basename(population[3]), [1, 2, 0])
    shutil.copytree(population[3], tmp_path / "tok", dirs_exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(population[3] / f, models[3] / f)
    cfg = _two_sets(models, tmp_path / "store", actors=4)
    for m, orig in zip(cfg.models, population):
        m.name = str(orig)  # same names as the reference so rows line up
    ray_sweep.run(plan.prepare(cfg), progress=False)
    pd.testing.assert_frame_equal(_table(cfg.store), reference, check_exact=False, atol=1e-6, rtol=0)


def test_nan_weights_found_in_an_actor_fail_in_one_line(ray_local, tmp_path, population):
    from safetensors.torch import load_file, save_file

    from lmc_ray.config import ConfigError

    bad = tmp_path / "nan_model"
    shutil.copytree(population[1], bad)
    state = load_file(bad / "model.safetensors")
    state["classifier.bias"][0] = float("nan")
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    cfg = config.from_dict(sweep_config([population[0], bad], tmp_path / "store", actors=2))
    with pytest.raises(ConfigError) as e:
        ray_sweep.run(plan.prepare(cfg), progress=False)
    assert str(e.value) == f"model '{bad}': parameter 'classifier.bias' contains NaN or inf"
    assert not (tmp_path / "store" / "curves").exists()
