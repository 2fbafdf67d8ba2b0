"""A store that grows: models and eval sets added to a stored sweep compute only what is new, and end equal to a
fresh sweep of the whole configuration; conflicts are one line."""
import pandas as pd
import pytest

from lmc_ray import config
from lmc_ray.analysis import findings
from lmc_ray.errors import ConfigError
from lmc_ray.execution import local, plan, ray_sweep
from lmc_ray.compute.work import Endpoint, Pair
from lmc_ray.execution.recorder import Recorder
from lmc_ray.storage.store import Store

from conftest import sweep_config


def _sweep(raw):
    p = plan.prepare(config.from_dict(raw))
    local.run(p, progress=False)
    return p


def _todo(raw):
    with Recorder(plan.prepare(config.from_dict(raw))) as rec:
        return rec.pairs, rec.endpoints


def _frames(path):
    store = Store(str(path))
    keys = (["model_a", "model_b", "eval_set", "subset", "alpha"], ["model", "eval_set", "subset"])
    return [t.to_table().to_pandas().sort_values(k).reset_index(drop=True)
            for t, k in zip((store.curves(), store.endpoints()), keys)]


def _equal(a, b):
    for x, y in zip(_frames(a), _frames(b)):
        pd.testing.assert_frame_equal(x, y, check_exact=False, atol=1e-6, rtol=0)


def _two_sets(models, store):
    raw = sweep_config(models, store)
    raw["eval_sets"].append(dict(raw["eval_sets"][0], name="nli_short", max_examples=24))
    return raw


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_three_models_then_four_computes_exactly_the_three_new_pairs(tmp_path, population, executor, request):
    """Then an eval set on top: through Ray's actors too, the grown store equals a fresh in-process sweep."""
    run = local.run if executor == "local" else request.getfixturevalue("ray_local") and ray_sweep.run
    _sweep(sweep_config(population[:3], tmp_path / "grown"))
    stored = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "grown" / "curves").iterdir()}
    grown = sweep_config(population[:4], tmp_path / "grown")
    assert _todo(grown) == ([Pair(0, 3), Pair(1, 3), Pair(2, 3)], [Endpoint(3)])
    report = run(plan.prepare(config.from_dict(grown)), progress=False)
    assert (report.endpoints, report.pairs, report.planes, len(report.busy)) == (1, 3, 0, 1)  # the new work only
    assert all((tmp_path / "grown" / "curves" / f).stat().st_mtime_ns == t for f, t in stored.items())
    _sweep(sweep_config(population[:4], tmp_path / "fresh"))
    _equal(tmp_path / "grown", tmp_path / "fresh")
    assert _todo(grown) == ([], [])
    assert run(plan.prepare(config.from_dict(grown)), progress=False).busy == []  # complete: nothing computed
    run(plan.prepare(config.from_dict(_two_sets(population[:4], tmp_path / "grown"))), progress=False)
    _sweep(_two_sets(population[:4], tmp_path / "fresh2"))
    _equal(tmp_path / "grown", tmp_path / "fresh2")


def test_an_eval_set_added_later_is_computed_on_the_stored_pairs_only(tmp_path, population):
    _sweep(sweep_config(population[:3], tmp_path / "grown"))
    both = _two_sets(population[:3], tmp_path / "grown")
    pairs, ends = _todo(both)
    assert pairs == [Pair(0, 1, (1,)), Pair(0, 2, (1,)), Pair(1, 2, (1,))] and ends == [Endpoint(i, (1,)) for i in range(3)]
    _sweep(both)
    assert sorted(f.name for f in (tmp_path / "grown" / "curves").iterdir())[:2] == [
        "pair-00000-00001-g1.parquet", "pair-00000-00001.parquet"]
    _sweep(_two_sets(population[:3], tmp_path / "fresh"))
    _equal(tmp_path / "grown", tmp_path / "fresh")
    # Then a model: its pairs need both groups' sets, computed once, written to each group's file.
    assert _todo(_two_sets(population[:4], tmp_path / "grown")) == ([Pair(0, 3), Pair(1, 3), Pair(2, 3)], [Endpoint(3)])


def test_conflicts_are_one_line_naming_them(tmp_path, population):
    from test_models import permuted_copy

    _sweep(sweep_config(population[:2], tmp_path / "s"))
    other = sweep_config(population[:2], tmp_path / "s")
    other["models"] = [str(population[0]), {"ref": str(population[2]), "name": str(population[1])}]
    with pytest.raises(ConfigError, match=rf"model '{population[1]}' changed since the store was written"):
        _todo(other)
    moved = tmp_path / "moved"  # the same weights elsewhere, under the same name: the same model
    permuted_copy(population[1], moved, [0, 1, 2])
    other["models"][1]["ref"] = str(moved)
    assert _todo(other) == ([], [])
    other = sweep_config(population[:2], tmp_path / "s")
    other["eval_sets"][0]["max_examples"] = 32
    with pytest.raises(ConfigError, match=r"eval set 'nli' differs from the stored one \(max_examples: 64 stored, 32"):
        _todo(other)
    _sweep(_two_sets(population[:2], tmp_path / "t"))
    with pytest.raises(ConfigError, match=r"eval set 'nli_short' is stored but not in the configuration"):
        _todo(sweep_config(population[:2], tmp_path / "t"))
    refined = sweep_config(population[:2], tmp_path / "r", refine=1)
    _sweep(refined)
    with pytest.raises(ConfigError, match=r"eval set 'nli_short' is new, and adaptive α \(refine\)"):
        _todo(_two_sets(population[:2], tmp_path / "r") | {"refine": 1})


def test_a_model_left_out_keeps_its_data_and_leaves_the_analysis(tmp_path, population):
    """m0 m1 m2 stored, then m0 m2 m3: m1's pairs stay in the store and out of the analysis, and only m3's pairs
    are computed (a model's files are named by its index in the store, not its place in the config)."""
    _sweep(sweep_config(population[:3], tmp_path / "s"))
    files = {f.name for f in (tmp_path / "s" / "curves").iterdir()}
    fewer = sweep_config([population[0], population[2], population[3]], tmp_path / "s")
    assert _todo(fewer) == ([Pair(0, 2), Pair(1, 2)], [Endpoint(2)])
    _sweep(fewer)
    assert {f.name for f in (tmp_path / "s" / "curves").iterdir()} == files | {
        "pair-00000-00003.parquet", "pair-00002-00003.parquet"}
    a = findings.run(Store(str(tmp_path / "s")))
    _sweep(sweep_config([population[0], population[2], population[3]], tmp_path / "fresh"))
    fresh = findings.run(Store(str(tmp_path / "fresh")))
    assert a.names == fresh.names == [str(population[k]) for k in (0, 2, 3)]
    pd.testing.assert_frame_equal(a.barriers, fresh.barriers, check_exact=False, atol=1e-6, rtol=0)
    assert str(population[1]) in Store(str(tmp_path / "s")).curves().to_table().to_pandas().model_b.tolist()
    # m1 back in the configuration, in another order: of its pairs only the one with m3 is missing.
    assert _todo(sweep_config([population[k] for k in (3, 1, 0, 2)], tmp_path / "s")) == ([Pair(0, 1)], [])
