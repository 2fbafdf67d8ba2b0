"""Bad input is reported before any pair runs, in one line naming the culprit, and nothing is written."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmc_ray import config
from lmc_ray.execution import plan
from lmc_ray.config import ConfigError
from lmc_ray.execution.recorder import Recorder

from conftest import ROOT, sweep_config


def _opened(raw: dict) -> plan.Plan:
    """Planned, then its store opened by a Recorder (identity checked, lease taken) and closed again."""
    p = plan.prepare(config.from_dict(raw))
    with Recorder(p):
        return p


def _bad_inputs(tmp_path, population):
    """(config overrides, expected message) for each kind of bad input the issue names."""
    wide = tmp_path / "wide"
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(population[0])
    cfg.intermediate_size = 64
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(wide)
    broken = tmp_path / "broken"
    shutil.copytree(population[1], broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    return [
        ({"models": [str(population[0]), str(tmp_path / "missing")]}, "model '/", "missing': no such directory"),
        ({"models": [str(population[0]), str(broken)]}, "model '", "broken': cannot read checkpoint"),
        ({"models": [str(population[0]), str(wide)]}, "model '", "wide': parameter"),
        ({"alphas": [0.0, 0.5, 2.0]}, "config: alpha 2.0", "outside [0, 1]"),
        ({"eval_sets": [{"name": "nli", "path": str(empty), "text": "premise", "label": "gold_label"}]},
         "eval set 'nli'", "empty.jsonl"),
        ({"eval_sets": [{"name": "nli", "path": sweep_config([], "")["eval_sets"][0]["path"], "text": "premise",
                         "label": "label"}]}, "eval set 'nli': no column 'label'", ""),
    ]


def test_each_bad_input_fails_before_anything_is_written(tmp_path, population):
    for over, head, tail in _bad_inputs(tmp_path, population):
        store = tmp_path / "store"
        over = dict(over)
        with pytest.raises(ConfigError) as e:
            plan.prepare(config.from_dict(sweep_config(over.pop("models", population[:2]), store, **over)))
        msg = str(e.value)
        assert head in msg and tail in msg and "\n" not in msg, msg
        assert not store.exists(), msg


def test_store_of_another_configuration_is_refused(tmp_path, population):
    """Settings every value shares (the α grid here) must match; another model is growth, not a conflict."""
    _opened(sweep_config(population[:2], tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"holds a run with a different configuration \(alphas differ\)"):
        _opened(sweep_config(population[:2], tmp_path / "store", alphas=3))
    _opened(sweep_config(population[:3], tmp_path / "store"))


def test_the_job_exits_2_with_one_line(tmp_path, population):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(sweep_config([population[0], tmp_path / "gone"], tmp_path / "store")))
    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"lmc-ray: error: model '{tmp_path / 'gone'}': no such directory"]
    assert not (tmp_path / "store").exists()


def test_a_checkpoint_changed_in_place_is_refused_on_resume(tmp_path, population):
    """The store records what identifies each model's weights; a resume whose model changed would mix the old
    stored endpoints with the new weights' interior points, so it is refused naming the model."""
    import json

    models = [tmp_path / "m0", tmp_path / "m1"]
    for src, dst in zip(population, models):
        shutil.copytree(src, dst)
    cfg = sweep_config(models, tmp_path / "store")
    _opened(cfg)
    recorded = json.loads((tmp_path / "store" / "run.json").read_text())["weights"]
    assert set(recorded) == {str(m) for m in models} and len(set(recorded.values())) == 2
    _opened(cfg)  # unchanged: resumes
    shutil.copy(population[2] / "model.safetensors", models[1] / "model.safetensors")  # same shapes, new values
    with pytest.raises(ConfigError) as e:
        _opened(cfg)
    assert f"model '{models[1]}' changed since the store was written" in str(e.value) and "\n" not in str(e.value)
    assert json.loads((tmp_path / "store" / "run.json").read_text())["weights"] == recorded


def test_labels_swapped_in_a_checkpoints_config_are_refused_on_resume(tmp_path, population):
    """Same weights, id2label reordered in config.json: its logits now mean other classes, so the stored lines
    (computed in the old order) must not be extended with the new; refused naming the model and both orders."""
    import json

    models = [tmp_path / "m0", tmp_path / "m1"]
    for src, dst in zip(population, models):
        shutil.copytree(src, dst)
    cfg = sweep_config(models, tmp_path / "store")
    _opened(cfg)
    config_json = models[1] / "config.json"
    c = json.loads(config_json.read_text())
    before = [c["id2label"][str(k)] for k in range(len(c["id2label"]))]
    c["id2label"] = {"0": before[1], "1": before[0], **{str(k): before[k] for k in range(2, len(before))}}
    c["label2id"] = {v: int(k) for k, v in c["id2label"].items()}
    config_json.write_text(json.dumps(c))
    with pytest.raises(ConfigError) as e:
        _opened(cfg)
    assert str(e.value) == (f"store '{tmp_path / 'store'}': model '{models[1]}' changed since the store was written "
                            f"(its config.json id2label was {before}, is {[before[1], before[0], *before[2:]]}); "
                            "restore it or use a new store path")


def test_models_that_cannot_be_had_are_named_together(tmp_path, population):
    cfg = sweep_config([population[0], tmp_path / "m3", population[1], tmp_path / "m7"], tmp_path / "store")
    with pytest.raises(ConfigError) as e:
        plan.prepare(config.from_dict(cfg))
    assert str(e.value).startswith(f"2 of 4 models cannot be had: {tmp_path / 'm3'}, {tmp_path / 'm7'} (the first: ")
    assert not (tmp_path / "store").exists()


def test_hub_models_from_the_cache_are_pinned_to_their_commit(tmp_path, population, monkeypatch):
    """Hub references through huggingface_hub's own cache layout (HF_HUB_CACHE respected, offline): each model is
    pinned to the commit its snapshot was taken at; when `main` moves to another commit, the resume is refused."""
    import hashlib
    import json

    from lmc_ray.execution import local

    hf = tmp_path / "hf"

    def publish(repo: str, src, tag: str) -> str:
        sha = hashlib.sha1(f"{repo}{tag}".encode()).hexdigest()
        folder = hf / f"models--{repo.replace('/', '--')}"
        shutil.copytree(src, folder / "snapshots" / sha)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(sha)
        return sha

    shas = [publish(f"lmcray/tiny{k}", population[k], "v1") for k in range(2)]
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = sweep_config(["lmcray/tiny0", "lmcray/tiny1"], tmp_path / "store", alphas=3)
    p = plan.prepare(config.from_dict(cfg))
    assert p.revisions == [f"hub:{s}" for s in shas]
    local.run(p, progress=False)
    assert json.loads((tmp_path / "store" / "run.json").read_text())["weights"] == dict(zip(cfg["models"], p.revisions))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))  # HF's cache used
    publish("lmcray/tiny1", population[2], "v2")  # upstream moved on
    with pytest.raises(ConfigError, match="model 'lmcray/tiny1' changed since the store was written"):
        _opened(cfg)


def test_the_tokenizer_from_another_reference(tmp_path, population, mnli_texts):
    """`tokenizer: REF` tokenizes the eval sets with REF's tokenizer, not the first model's."""
    from transformers import AutoTokenizer

    from lmc_ray.compute.data import read_table
    from lmc_ray.training.pretrain import build_tokenizer

    build_tokenizer(mnli_texts, 800).save_pretrained(tmp_path / "tok800")  # another vocabulary than the models'
    p = plan.prepare(config.from_dict(sweep_config(population[:2], tmp_path / "store", tokenizer=str(tmp_path / "tok800"))))
    df = read_table(p.cfg.eval_sets[0])
    for name, same in ((tmp_path / "tok800", True), (population[0], False)):
        tok = AutoTokenizer.from_pretrained(name)
        ids = [tok(a, b)["input_ids"] for a, b in zip(df.premise, df.hypothesis)]
        assert all(list(x) == y for x, y in zip(p.datas[0].input_ids, ids)) == same, name


def test_hub_files_go_where_huggingface_hub_keeps_them(monkeypatch, tmp_path):
    """Models a user already has in huggingface_hub's cache are found there, not downloaded again to our own."""
    from lmc_ray.compute import sources

    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert sources._hub_cache() == Path("~/.cache/huggingface/hub").expanduser()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources._hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert sources._hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert sources._hub_cache() == tmp_path / "hub"
    for value, offline in (("1", True), ("ON", True), ("yes", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert sources.hub_offline() is offline, value
