"""The language-model example (docs/lm-example.md): its start, a base trained from scratch on it, and the shipped
adapters swept as the page states."""
import ast
import dataclasses
import json
import re

import pandas as pd
import pytest
import yaml

from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.storage.store import Store
from lmc_ray.training import finetune, lm_start

from conftest import ROOT


def test_a_start_without_weights_trains_from_scratch(tmp_path):
    """lm_start writes an architecture and a tokenizer, no weights; `init: random` draws every weight from the seed
    (the same seed, the same model) and trains it; lora on such a start is refused."""
    texts = lm_start.texts(ROOT.parent / "shared" / "data")
    assert len(texts) == 9815 + 8551 + 11988
    start = lm_start.write(tmp_path / "start", texts[::20], vocab_size=300, layers=1, hidden=16, heads=2, positions=64)
    assert {p.name for p in start.iterdir()} == {"config.json", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((start / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    pd.DataFrame({"s": texts[:400]}).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame({"s": texts[-64:]}).to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    text = lambda name: {"name": name, "path": str(tmp_path / f"{name}.jsonl"), "text": ["s"]}
    raw = {"base": str(start), "init": "random", "train": text("train"), "eval_sets": [text("dev")], "seeds": [0],
           "epochs": 1, "batch_size": 16, "lr": 5e-3, "reports": 1, "max_length": 64}
    first = finetune.train(finetune.from_dict(raw | {"output": str(tmp_path / "a")}), 0)
    again = finetune.train(finetune.from_dict(raw | {"output": str(tmp_path / "b")}), 0)
    assert first == again and first["dev/loss"] < 5.5  # from ln(300) = 5.70
    assert (tmp_path / "a" / "seed_0" / "model.safetensors").is_file()
    with pytest.raises(config.ConfigError, match="init: random trains every weight"):
        finetune.from_dict(raw | {"output": str(tmp_path / "c"), "lora": {}})


def _listed(doc: str, first: str):
    return ast.literal_eval(re.search(rf"^    (\[\('{re.escape(first)}.*\])$", doc, re.M).group(1))


def test_the_shipped_adapters_sweep_as_docs_lm_example_md_states(tmp_path, monkeypatch):
    """Three of the six shipped adapters (two CoLA, one PAWS): their scores alone and the barriers of their three
    lines are those the page's duckdb commands printed for the whole example, on any machine."""
    monkeypatch.chdir(ROOT)
    cfg = config.load(config.parser("t").parse_args(["--config", "lm/sweep", "--store", str(tmp_path / "store"),
                                                     "--cache-dir", str(tmp_path / "cache")]))
    names = ["cola_0", "cola_1", "paws_0"]
    cfg = dataclasses.replace(cfg, models=[m for m in cfg.models if m.name in names])
    local.run(plan.prepare(cfg), progress=False)
    store = Store(cfg.store)
    doc = (ROOT / "docs" / "lm-example.md").read_text()

    ends = store.endpoints().to_table().to_pandas().query("subset == 'all'")
    got = {(m, e): (round(l, 3), round(a, 3)) for m, e, l, a in zip(ends.model, ends.eval_set, ends.loss, ends.accuracy)}
    listed = {(m, e): (l, a) for m, e, l, a in _listed(doc, "cola_0', 'cola'")}
    assert len(listed) == 12 and got == {k: v for k, v in listed.items() if k[0] in names}

    from lmc_ray.analysis import barriers

    rows = barriers.table(store.curves().to_table().to_pandas()).query("metric == 'loss'")
    stated = {(e, p): b for e, p, b in _listed(doc, "cola', 'cola_0|cola_1'")}
    assert len(stated) == 30
    for e, a, b, v in zip(rows.eval_set, rows.model_a, rows.model_b, rows.barrier):
        assert v == pytest.approx(stated[(e, f"{a}|{b}")], abs=6e-5), (e, a, b)


def test_the_shipped_adapters_name_their_base_as_the_configs_that_trained_them():
    """Each adapter records the base as lm/cola.yaml and lm/paws.yaml write it (a path relative to the repository),
    not the absolute path Tune's trials were given, and the rank those configs set."""
    for task in ("cola", "paws"):
        trained = finetune.from_dict(yaml.safe_load((ROOT / "lmc_ray" / "configs" / "lm" / f"{task}.yaml").read_text()))
        for k in trained.seeds:
            adapter = json.loads((ROOT / "lmc_ray" / "lm_population" / f"{task}_{k}" / "adapter_config.json").read_text())
            assert (adapter["base_model_name_or_path"], adapter["r"]) == (trained.base, trained.lora.r)


def test_the_real_base_config_lists_the_hubs_adapters(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = config.load(config.parser("t").parse_args(["--config", "lm/qwen_adapters"]))
    assert cfg.models == [] and [(h.adapters_of, h.limit) for h in cfg.listings] == [("Qwen/Qwen2.5-0.5B", 50)]
    assert [(e.name, e.label, e.max_examples) for e in cfg.eval_sets] == [("lambada", None, 512),
                                                                          ("tinystories", None, 512)]
    assert (cfg.max_length, cfg.batch_tokens, cfg.dtype) == (512, 4096, "bfloat16")
