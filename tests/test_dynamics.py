"""Basin commitment during training: clusters matched across steps on a hand-made case, and end to end from
checkpoints finetuning kept at chosen steps."""
import pandas as pd
import pytest

from lmc_ray import config
from lmc_ray.analysis import dynamics, findings, report
from lmc_ray.compute import sources
from lmc_ray.config import EvalSetSpec
from lmc_ray.execution import local, plan
from lmc_ray.storage.store import Store
from lmc_ray.training import finetune, toynli

from test_finetune import _base


def test_clusters_are_numbered_to_follow_the_step_before():
    before = {"m0": 0, "m1": 0, "m2": 1, "m3": 1}
    # The spectral clustering's own numbers are arbitrary: here its 1 is mostly the earlier 0.
    assert dynamics.match(before, {"m0": 1, "m1": 1, "m2": 0, "m3": 1}) == {"m0": 0, "m1": 0, "m2": 1, "m3": 0}
    # A cluster with no earlier partner takes a new number.
    assert dynamics.match({"m0": 0, "m1": 0, "m2": 0}, {"m0": 5, "m1": 7, "m2": 7}) == {"m0": 1, "m1": 0, "m2": 0}
    assert dynamics.steps([{"step": "final"}, {"step": "40"}, {"step": "200"}, {}]) == ["40", "200", "final"]
    df = pd.DataFrame({"model": ["a", "a", "b", "b"], "step": ["1", "final"] * 2, "cluster": [0, 1, 0, 0]})
    assert dynamics.moved(df).to_dict("records") == [
        {"model": "a", "step_from": "1", "step_to": "final", "cluster_from": 0, "cluster_to": 1}]


def test_steps_expand_to_checkpoints_and_pairs_stay_within_a_step(tmp_path, monkeypatch):
    """A local model's step S is the folder REF-stepS beside it; a hub model's, a commit of its history
    (tests/test_models.py runs that through a hub on loopback)."""
    monkeypatch.chdir(tmp_path)
    for k in range(3):
        (tmp_path / "runs" / f"seed_{k}").mkdir(parents=True)
    raw = {"models": [{"ref": "runs/seed_{0..2}", "name": "s{0..2}", "steps": [40, "final"]}], "store": "x",
           "eval_sets": [{"name": "v", "path": "v.jsonl", "text": "t", "label": "l"}]}
    cfg = config.from_dict(raw)
    assert [(m.name, m.ref, m.step) for m in cfg.models][:3] == [
        ("s0@40", f"{tmp_path}/runs/seed_0-step40", "40"), ("s0@final", f"{tmp_path}/runs/seed_0", "final"),
        ("s1@40", f"{tmp_path}/runs/seed_1-step40", "40")]
    hub = config.from_dict(raw | {"models": [{"ref": "connectivity/bert_ft_qqp-{7..8}", "steps": [15000, "final"]}]})
    assert [(m.name, m.ref) for m in hub.models][:2] == [
        ("connectivity/bert_ft_qqp-7@15000", "connectivity/bert_ft_qqp-7@step:15000"),
        ("connectivity/bert_ft_qqp-7@final", "connectivity/bert_ft_qqp-7")]
    with pytest.raises(config.ConfigError, match=r"steps must be a list of positive step numbers and/or final"):
        config.from_dict(raw | {"models": [{"ref": "m{0..1}", "steps": ["last"]}]})
    with pytest.raises(config.ConfigError, match=r"steps pick commits on main; give the repository without @revision"):
        config.from_dict(raw | {"models": [{"ref": "org/m{0..1}@dev", "steps": [1, "final"]}]})
    with pytest.raises(config.ConfigError, match=r"model 'org/m0@step:1': finding the commit of a step needs the hub"):
        sources.inspect("org/m0@step:1", cache_dir=str(tmp_path / "cache"))  # tests run with HF_HUB_OFFLINE=1


def test_checkpoints_at_steps_are_swept_within_each_step_and_followed_across(tmp_path):
    """4 seeds finetuned on the built-in task keep step 4 (of 7) besides the final model; the sweep computes the 6
    pairs within each step (12, not 28); the analysis clusters each step, writes dynamics.parquet and draws it."""
    data = toynli.write(tmp_path / "data", n_train=200, n_val=48, per_subcase=4)
    base = _base(tmp_path, toynli.generate(n_train=200)["train"])
    spec = lambda name, **kw: EvalSetSpec(name=name, path=str(data[name]), text=["premise", "hypothesis"],  # noqa: E731
                                          label="label", **kw)
    ft = finetune.FinetuneConfig(base=str(base), train=spec("train", max_examples=None), labels=toynli.LABELS,
                                 eval_sets=[], output=str(tmp_path / "runs"), seeds=[0, 1, 2, 3], epochs=1,
                                 reports=1, save_steps=[4], device="cpu")
    for seed in ft.seeds:
        finetune.train(ft, seed)
    assert all((tmp_path / "runs" / f"seed_{s}-step4" / "DONE").is_file() for s in ft.seeds)
    raw = {"models": [{"ref": str(tmp_path / "runs" / "seed_{0..3}"), "name": "s{0..3}", "steps": [4, "final"]}],
           "store": str(tmp_path / "store"), "alphas": 5, "cache_dir": str(tmp_path / "cache"),
           "eval_sets": [{"name": "validation", "path": str(data["validation"]), "text": ["premise", "hypothesis"],
                          "label": "label"},
                         {"name": "diagnostic", "path": str(data["diagnostic"]), "text": ["premise", "hypothesis"],
                          "label": "label", "role": "diagnostic", "max_examples": 120}]}
    p = plan.prepare(config.from_dict(raw))
    assert len(p.pairs) == 12 and all(p.cfg.models[a].step == p.cfg.models[b].step for a, b, _ in p.pairs)
    local.run(p, progress=False)
    store = Store(str(tmp_path / "store"))
    a = findings.run(store)
    findings.write(store, a)
    assert a.names == [f"s{k}@final" for k in range(4)]  # the basins of the last step, as for any store
    dyn = pd.read_parquet(tmp_path / "store" / "dynamics.parquet")
    assert sorted(dyn.columns) == ["cluster", "model", "score", "step"]
    assert len(dyn) == 8 and set(dyn.step) == {"4", "final"} and set(dyn.model) == {f"s{k}" for k in range(4)}
    ends = store.endpoints().to_table().to_pandas().set_index(["model", "eval_set", "subset"]).accuracy
    assert all(r.score == pytest.approx(ends[(f"{r.model}@{r.step}", "diagnostic", "all")]) for r in dyn.itertuples())
    final = dict(zip(a.clusters[a.clusters.method == "paper"].model, a.clusters[a.clusters.method == "paper"].cluster))
    at_final = dyn[dyn.step == "final"]
    # The same partition as the basins of the final models (numbers may differ: dynamics follows step 4's).
    pairs = [(x, y) for x in range(4) for y in range(4)]
    same = lambda c: {(x, y) for x, y in pairs if c[f"s{x}"] == c[f"s{y}"]}  # noqa: E731
    assert same(dict(zip(at_final.model, at_final.cluster))) == same({k.split("@")[0]: v for k, v in final.items()})
    assert "dynamics over steps 4, final" in findings.text_summary(a)
    report.write(store, a)
    assert (tmp_path / "store" / "report" / "dynamics.png").stat().st_size > 5_000
