"""configs/{mnli,qqp,cola}.yaml as shipped (hub populations), and their offline overlays end to end."""
import importlib.util

import pandas as pd
import pytest
import torch

from lmc_ray import config
from lmc_ray.config import refs
from lmc_ray.testing.population import make_population

from conftest import ROOT

TASKS = {  # task: the population's class names in id order, the metrics its sets report
    "mnli": (["contradiction", "entailment", "neutral"],
             {"mnli": ["accuracy"], "hans": ["accuracy"], "hans_full": ["accuracy"]}),
    "qqp": (["not_duplicate", "duplicate"],
            {"qqp": ["accuracy", "f1"], "paws": ["accuracy", "f1"], "paws_full": ["accuracy", "f1"]}),
    "cola": (["unacceptable", "acceptable"], {"cola_in_domain": ["accuracy", "mcc"], "cola_ood": ["accuracy", "mcc"],
                                              "cola_ood_full": ["accuracy", "mcc"]}),
}
# The whole diagnostic sets, each model alone (endpoints_only), as the paper scores its models out of distribution.
FULL = {"mnli": ("hans_full", 30000), "qqp": ("paws_full", 677), "cola": ("cola_ood_full", 516)}


def _job(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(*argv):
    return config.load(config.parser("t").parse_args(list(argv)))


@pytest.mark.parametrize("task", TASKS)
def test_shipped_configuration_validates(task, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = _load("--config", f"configs/{task}.yaml")
    labels, metrics = TASKS[task]
    assert len(cfg.models) == 100 and len({m.name for m in cfg.models}) == 100
    assert all(refs.kind(m.ref) == "hub" and m.labels == labels for m in cfg.models)
    assert cfg.alphas == config.grid(10) and cfg.tokenizer == "google-bert/bert-base-uncased"
    assert {e.name: e.metrics for e in cfg.eval_sets} == metrics
    assert [(e.max_examples, e.endpoints_only) for e in cfg.eval_sets] == [(512, False), (512, False), (None, True)]
    assert [e.role for e in cfg.eval_sets] == ["in_domain", "diagnostic", "diagnostic"]
    if task == "cola":  # GLUE's CoLA validation: in-domain rows 0-526, then out-of-domain rows 527-1042
        assert [e.split for e in cfg.eval_sets] == ["validation[:527]", "validation[527:]", "validation[527:]"]


def test_qqp_at_the_papers_steps(monkeypatch):
    """The paper re-clusters its QQP models at 15k and 25k steps and at the end: each a commit of the model's hub
    history (the search for it runs against a hub on loopback in tests/test_models.py)."""
    monkeypatch.chdir(ROOT)
    cfg = _load("--config", "configs/qqp.yaml", "--overlay", "configs/variants/qqp_steps.yaml")
    assert len(cfg.models) == 300 and [m.step for m in cfg.models[:3]] == ["15000", "25000", "final"]
    assert [(m.name, m.ref) for m in cfg.models[3:6]] == [
        ("qqp_1@15000", "connectivity/bert_ft_qqp-1@step:15000"), ("qqp_1@25000", "connectivity/bert_ft_qqp-1@step:25000"),
        ("qqp_1@final", "connectivity/bert_ft_qqp-1")]
    assert all(m.labels == TASKS["qqp"][0] for m in cfg.models) and not cfg.across_steps


def test_mnli_hans_is_the_papers_selection_or_the_broad_one(monkeypatch):
    """On the line: the paper's 512 (lexical-overlap non-entailment, datasets' shuffle(seed=42), first 512), the
    same rows `datasets` gives; the broad variant spreads 512 over the 30 subcases instead."""
    import datasets

    from lmc_ray.compute.data import read_table

    monkeypatch.chdir(ROOT)
    hans = {e.name: e for e in _load("--config", "configs/mnli.yaml", "--overlay", "configs/offline/mnli.yaml").eval_sets}["hans"]
    got = read_table(hans)
    whole = pd.read_csv(hans.path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    ref = (datasets.Dataset.from_pandas(whole).filter(lambda e: e["heuristic"] == "lexical_overlap")
           .filter(lambda e: e["gold_label"] == "non-entailment").shuffle(seed=42).select(range(512)))
    assert len(got) == 512 and list(got.pairID) == ref["pairID"]
    assert list(got.pairID[:5]) != list(whole[(whole.heuristic == "lexical_overlap") & (whole.gold_label == "non-entailment")].pairID[:5])
    broad = {e.name: e for e in _load("--config", "configs/mnli.yaml", "--overlay", "configs/offline/mnli.yaml",
                                      "--overlay", "configs/variants/hans_broad.yaml").eval_sets}["hans"]
    rows = read_table(broad)
    assert len(rows) == 512 and rows.subcase.nunique() == 30 and set(rows.gold_label) == {"entailment", "non-entailment"}


@pytest.mark.parametrize("task", TASKS)
def test_offline_variant_runs_end_to_end(task, tmp_path, monkeypatch, mnli_texts, ray_local):
    """Tiny models saved with generic LABEL_i names: the shipped config's declared labels map their heads. m3 is
    m2 with its classes in another order (head rows permuted, still saved as LABEL_0..k) and declared in that
    order: it scores exactly as m2 on every set, and the line between them is flat."""
    from transformers import AutoModelForSequenceClassification

    monkeypatch.chdir(ROOT)
    labels, metrics = TASKS[task]
    generic = [f"LABEL_{i}" for i in range(len(labels))]
    pop = make_population(tmp_path / "pop", 3, mnli_texts, generic, layers=1, hidden=32, heads=2, noise=0.05,
                          vocab_size=800)
    perm = list(range(len(labels)))[::-1] if len(labels) == 2 else [2, 0, 1]
    m3 = AutoModelForSequenceClassification.from_pretrained(pop[2])
    with torch.no_grad():
        m3.classifier.weight.copy_(m3.classifier.weight[perm])
        m3.classifier.bias.copy_(m3.classifier.bias[perm])
    m3.save_pretrained(tmp_path / "pop" / "m3")
    store = tmp_path / "store"
    _job("sweep").sweep([
        "--config", f"configs/{task}.yaml", "--overlay", f"configs/offline/{task}.yaml", "--store", str(store),
        "--max-examples", "60", "--alphas", "3", "--set", "tokenizer=null", "--set", f"cache_dir={tmp_path / 'cache'}",
        "--set", f"models=[{{ref: '{tmp_path}/pop/m{{0..2}}', name: 'm{{0..2}}', labels: {labels}}}, "
                 f"{{ref: '{tmp_path}/pop/m3', name: m3, labels: {[labels[p] for p in perm]}}}]"])
    ends = pd.read_parquet(store / "endpoints").set_index(["model", "eval_set", "subset"]).sort_index()
    scores = [c for c in ("loss", "accuracy", "f1", "mcc") if c in ends]
    pd.testing.assert_frame_equal(ends.loc["m3", scores], ends.loc["m2", scores], check_exact=False, atol=1e-5, rtol=0)
    curves = pd.read_parquet(store / "curves")
    line = curves[(curves.model_a == "m2") & (curves.model_b == "m3")]
    assert len(line) and (line.groupby(["eval_set", "subset"]).loss.agg(lambda x: x.max() - x.min()) < 1e-5).all()
    assert curves.groupby(["model_a", "model_b"]).ngroups == 6 and set(curves.alpha) == {0.0, 0.5, 1.0}
    full, rows = FULL[task]
    offline = {"qqp": "paws_train"}  # the offline stand-in for QQP, named for what it is
    assert set(curves.eval_set) == {offline.get(s, s) for s in metrics} - {full}  # the whole set is never on a line...
    whole = curves[curves.subset == "all"]
    assert (whole.n_examples == 60).all()
    ends = pd.read_parquet(store / "endpoints")  # ...but every model is scored on all of it
    assert set(ends[(ends.eval_set == full) & (ends.subset == "all")].n_examples) == {rows}
    assert ends[ends.eval_set == full].model.nunique() == 4
    assert whole.f1.between(0, 1).all() and whole.mcc.between(-1, 1).all() and whole.loss.notna().all()
    if task == "mnli":  # the paper's HANS rows: lexical-overlap non-entailment subcases only (all start "ln_")
        sub = curves[(curves.eval_set == "hans") & curves.subset.str.startswith("subcase=")]
        assert sub.subset.str.startswith("subcase=ln_").all() and sub.subset.nunique() > 1

    _job("analyse").analyse(["--store", str(store)])
    per_model = pd.read_parquet(store / "clusters.parquet")
    assert set(per_model.model) == {f"m{i}" for i in range(4)}
    html = (store / "report" / "index.html").read_text()
    for name, wanted in metrics.items():
        for m in wanted:
            assert f"{offline.get(name, name)}/all/{m}" in html
