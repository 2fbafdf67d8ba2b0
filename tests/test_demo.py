"""The built-in demo end to end: the shipped population as docs/demo.md describes it, and, small, a population
finetuned here (few models, short training), on the session's Ray instance."""
import ast
import re
from pathlib import Path

import pandas as pd

from lmc_ray import demo

from conftest import ROOT


def test_the_shipped_population_shows_what_docs_demo_md_states(ray_local, tmp_path, capsys, monkeypatch):
    """No training: the sweep and the analysis of the shipped seeds print the summary docs/demo.md quotes, and each
    seed's swap accuracy is the list its duckdb command printed, on any machine. A rerun from the same folder (a
    relative workdir, as `make demo` has) finds everything stored."""
    monkeypatch.chdir(tmp_path)
    d = demo.DemoConfig(workdir="demo", cache_dir=str(tmp_path / "cache"))
    assert not demo.trains(d)
    times = demo.run(d)
    out = capsys.readouterr().out
    assert set(times) == {"sweep", "cluster"} and not (tmp_path / "demo" / "models").exists()
    stored = sorted((tmp_path / "demo" / "store" / "curves").iterdir())
    before = [f.stat().st_mtime_ns for f in stored]
    demo.run(demo.DemoConfig(workdir="demo", cache_dir=str(tmp_path / "cache")))
    assert [f.stat().st_mtime_ns for f in stored] == before  # no pair computed again
    doc = (ROOT / "docs" / "demo.md").read_text().split("## What the demo population looks like")[1].split("\n## ")[0]
    quoted = re.findall(r"^    ((?:16 models, barriers|highest barriers|validation/all|diagnostic/subcase=ln_subject|"
                        r"basins on).*)$", doc, re.M)
    assert len(quoted) == 5
    printed = out.splitlines()
    for line in quoted:
        assert line in printed, line
    listed = dict(ast.literal_eval(re.search(r"^    (\[\('seed_\d+', [\d.]+\).*\])$", doc, re.M).group(1)))
    ends = pd.read_parquet(Path(d.workdir) / "store" / "endpoints")
    swap = ends[(ends.eval_set == "diagnostic") & (ends.subset == "subcase=ln_subject/object_swap")]
    assert {m: round(a, 2) for m, a in zip(swap.model, swap.accuracy)} == listed
    assert f"Ordered by {demo.OOD}" in (Path(d.workdir) / "store" / "report" / "index.html").read_text()


def test_small_demo_end_to_end_and_cached_rerun(ray_local, tmp_path, capsys):
    d = demo.DemoConfig(workdir=str(tmp_path / "demo"), n_models=3, epochs=0.1, cache_dir=str(tmp_path / "cache"),
                        max_examples=64, pretrain_steps=20)
    demo.run(d)
    out = capsys.readouterr().out
    store = Path(d.workdir) / "store"
    assert len(list((store / "curves").glob("pair-*.parquet"))) == 3
    assert (store / "report" / "index.html").is_file() and (store / "clusters.parquet").is_file()
    assert "cluster models" in out and f"report: {(store / 'report' / 'index.html').resolve()}" in out
    written = [Path(d.workdir) / "models" / "seed_2" / "model.safetensors", *sorted((store / "curves").iterdir())]
    before = [f.stat().st_mtime_ns for f in written]
    demo.run(d)  # everything cached: no training, no pair recomputed
    assert [f.stat().st_mtime_ns for f in written] == before


def test_two_fresh_demo_runs_make_the_same_models(ray_local, tmp_path):
    """Same seeds, same machine, nothing cached: the pretrained start and every finetuned model are bitwise equal
    (seeded data order and heads, fixed threads per trial, no dependence on which trial runs first)."""
    made = []
    for k in range(2):
        d = demo.DemoConfig(workdir=str(tmp_path / f"demo{k}"), n_models=3, epochs=0.1, cache_dir=str(tmp_path / f"c{k}"),
                            max_examples=32, pretrain_steps=20)
        demo.run(d)
        made.append([(Path(d.workdir) / "models" / f"seed_{s}" / "model.safetensors").read_bytes() for s in range(3)])
    assert made[0] == made[1]
    assert len(set(made[0])) == 3  # and the seeds do differ


def test_word_matching_labels_each_hypothesis_token_by_the_premise():
    import torch

    from lmc_ray.training.pretrain import in_premise

    special = torch.tensor([0, 2, 3])  # [PAD], [CLS], [SEP]
    #                    [CLS] 7  8  9 [SEP] 9  7  5 [SEP] [PAD]
    ids = torch.tensor([[2, 7, 8, 9, 3, 9, 7, 5, 3, 0]])
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]])
    hyp, found = in_premise(ids, types, special)
    assert hyp[0].tolist() == [False] * 5 + [True, True, True, False, False]
    assert found[0][hyp[0]].tolist() == [1, 1, 0]  # 9 and 7 are in the premise, 5 is not


def test_demo_with_steps_and_planes(ray_local, tmp_path, capsys):
    """`lmc-ray demo --steps 4 --planes 1`, small: the models kept at step 4 too, both steps swept and followed,
    one plane through the basin boundary chosen by the analysis and drawn in the report."""
    import pandas as pd

    d = demo.DemoConfig(workdir=str(tmp_path / "demo"), n_models=4, epochs=0.1, cache_dir=str(tmp_path / "cache"),
                        max_examples=48, pretrain_steps=20, save_steps=(4,), planes=1)
    demo.run(d)
    out = capsys.readouterr().out
    store = Path(d.workdir) / "store"
    dyn = pd.read_parquet(store / "dynamics.parquet")
    assert len(dyn) == 8 and list(dict.fromkeys(dyn.step)) == ["4", "final"]
    assert len(list((store / "curves").glob("pair-*.parquet"))) == 12  # 6 pairs within each step
    (plane,) = list((store / "planes").rglob("plane-*.parquet"))
    rows = pd.read_parquet(plane)
    a, b, c = rows.model_a.iloc[0], rows.model_b.iloc[0], rows.model_c.iloc[0]
    clusters = pd.read_parquet(store / "clusters.parquet").query("method == 'paper'").set_index("model").cluster
    assert clusters[a] == clusters[b] != clusters[c]  # two of one basin, one of the other
    assert {"dynamics.png", "planes.png"} <= {f.name for f in (store / "report").iterdir()}
    assert "dynamics over steps 4, final" in out


def test_only_the_default_settings_sweep_the_shipped_population():
    assert not demo.trains(demo.DemoConfig()) and not demo.trains(demo.DemoConfig(n_models=4, planes=1))
    for other in ({"retrain": True}, {"n_models": demo.SHIPPED + 1}, {"save_steps": (100,)}, {"epochs": 0.1},
                  {"swap_rate": 0.05}):
        assert demo.trains(demo.DemoConfig(**other)), other
    shipped = sorted(p.name for p in demo.POPULATION.iterdir())
    assert shipped == sorted(f"seed_{k}" for k in range(demo.SHIPPED))
    for k in range(demo.SHIPPED):  # each a whole HF checkpoint, and nothing of the run that made it
        assert {p.name for p in (demo.POPULATION / f"seed_{k}").iterdir()} == {
            "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
