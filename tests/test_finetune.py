"""Finetuning on Ray Tune writes loadable HF checkpoints, one per seed, and skips finished ones."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lmc_ray.config import EvalSetSpec
from lmc_ray.training import finetune, ray_finetune, toynli
from lmc_ray.training.pretrain import bert_config, build_tokenizer

from lmc_ray.testing.s3 import S3Relay


def _base(tmp_path, train):
    from transformers import BertForSequenceClassification

    tok = build_tokenizer(list(train.premise) + list(train.hypothesis))
    torch.manual_seed(0)
    path = tmp_path / "base"
    BertForSequenceClassification(bert_config(len(tok), toynli.LABELS, 1, 32, 2, 64, 0.0)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _toy_finetune(tmp_path, **over) -> dict:
    """A finetuning config on the built-in task: a tiny base, 300 training pairs, one epoch."""
    data = toynli.write(tmp_path / "data", n_train=300, n_val=64, per_subcase=10)
    return {"base": str(_base(tmp_path, toynli.generate(n_train=300)["train"])),
            "train": {"path": str(data["train"]), "text": ["premise", "hypothesis"], "label": "label"},
            "eval_sets": [{"name": "validation", "path": str(data["validation"]), "text": ["premise", "hypothesis"],
                           "label": "label"}],
            "labels": toynli.LABELS, "output": str(tmp_path / "models"), "epochs": 1, **over}


def test_two_seed_tune_run_writes_loadable_checkpoints(ray_local, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = finetune.from_dict(_toy_finetune(tmp_path, seeds=2, reports=2))
    assert cfg.train.max_examples is None and cfg.seeds == [0, 1]
    urls = ray_finetune.run(cfg, str(tmp_path / "tune"))
    assert urls == [str(tmp_path / "models" / "seed_0"), str(tmp_path / "models" / "seed_1")]
    models = [AutoModelForSequenceClassification.from_pretrained(u) for u in urls]
    assert models[0].config.id2label == {0: "entailment", 1: "non-entailment"}
    # Same start, different seeds: the heads differ.
    assert not torch.equal(models[0].classifier.weight, models[1].classifier.weight)
    assert (tmp_path / "tune" / "finetune").is_dir()  # Tune's experiment state, what Tuner.restore reads
    # A rerun finds both models finished and trains nothing.
    before = [(tmp_path / "models" / f"seed_{s}" / "model.safetensors").stat().st_mtime_ns for s in (0, 1)]
    ray_finetune.run(cfg, str(tmp_path / "tune"))
    after = [(tmp_path / "models" / f"seed_{s}" / "model.safetensors").stat().st_mtime_ns for s in (0, 1)]
    assert before == after


def test_seeds_trained_one_after_another_in_one_process_are_those_trained_alone(ray_local, tmp_path):
    """Tune reuses a trial's process for the next seed (no re-import per seed); each seed's model is still
    bit-equal to that seed trained alone in a fresh call, so no state leaks from one seed into the next."""
    from safetensors.torch import load_file

    raw = _toy_finetune(tmp_path, seeds=3)
    # 2 CPUs a trial on a 2-CPU instance: the three seeds run in turn, in one reused process.
    ray_finetune.run(finetune.from_dict(raw), str(tmp_path / "tune"), cpus_per_trial=2)
    pids = {json.loads(f.read_text().splitlines()[-1])["pid"] for f in (tmp_path / "tune").rglob("result.json")}
    assert len(pids) == 1, pids
    alone = finetune.from_dict({**raw, "output": str(tmp_path / "alone")})
    for seed in (2, 0):
        finetune.train(alone, seed, threads=2)
        got, want = (load_file(tmp_path / d / f"seed_{seed}" / "model.safetensors") for d in ("models", "alone"))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), seed


def test_train_reports_metrics_as_it_goes(tmp_path):
    data = toynli.write(tmp_path / "data", n_train=200, n_val=32, per_subcase=5)
    base = _base(tmp_path, toynli.generate(n_train=200)["train"])
    spec = lambda name, **kw: EvalSetSpec(name=name, path=str(data[name]), text=["premise", "hypothesis"],
                                          label="label", max_examples=None, **kw)
    cfg = finetune.FinetuneConfig(base=str(base), train=spec("train"), labels=toynli.LABELS,
                                  eval_sets=[spec("diagnostic", subsets=["subcase"])], output=str(tmp_path / "out"),
                                  seeds=[5], epochs=1, reports=3)
    seen = []
    final = finetune.train(cfg, 5, report=seen.append)
    assert len(seen) == 3 and seen[-1] == final and seen[-1]["step"] == 7
    assert "diagnostic/subcase=ln_subject/object_swap/accuracy" in final
    assert finetune.exists(cfg, 5) and not finetune.exists(cfg, 6)


def test_each_seed_sees_its_own_data_order_in_whole_epochs():
    """The step batches come from the seed alone (a CPU generator, whatever the training device): every epoch
    visits each example once, the same seed gives the same order, another seed another."""
    import numpy as np

    steps = finetune.batches(10, 3, 7, seed=4)  # 3 full batches per epoch of 10; 7 steps: 2 epochs and a bit
    assert [len(b) for b in steps] == [3] * 7
    for epoch in (steps[0:3], steps[3:6]):
        seen = np.concatenate(epoch)
        assert len(set(seen)) == 9 and set(seen) <= set(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(steps, finetune.batches(10, 3, 7, seed=4)))
    assert not all(np.array_equal(a, b) for a, b in zip(steps, finetune.batches(10, 3, 7, seed=5)))


def test_bfloat16_autocast_trains_float32_weights(tmp_path):
    """dtype: bfloat16 (the GPU default) run on the CPU: the forward and backward run in bf16 autocast, the weights
    and the saved checkpoint stay float32, and they end close to, not equal to, float32 training of the seed."""
    from transformers import AutoModelForSequenceClassification

    data = toynli.write(tmp_path / "data", n_train=200, n_val=32, per_subcase=5)
    base = _base(tmp_path, toynli.generate(n_train=200)["train"])
    spec = EvalSetSpec(name="train", path=str(data["train"]), text=["premise", "hypothesis"], label="label",
                       max_examples=None)
    weights = {}
    for dtype in ("float32", "bfloat16"):
        cfg = finetune.FinetuneConfig(base=str(base), train=spec, labels=toynli.LABELS, eval_sets=[],
                                      output=str(tmp_path / dtype), seeds=[1], epochs=1, reports=1, device="cpu",
                                      dtype=dtype)
        finetune.train(cfg, 1)
        model = AutoModelForSequenceClassification.from_pretrained(finetune.model_url(cfg, 1))
        weights[dtype] = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        assert model.dtype == torch.float32
    start = torch.nn.utils.parameters_to_vector(AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2).parameters()).detach()
    moved = (weights["float32"] - start).norm()
    gap = (weights["bfloat16"] - weights["float32"]).norm()
    print(f"bf16 vs fp32 training: {gap:.4f}; training moved the weights {moved:.4f}")
    assert 0 < gap < 0.5 * moved, (gap, moved)


def test_base_data_and_checkpoints_on_s3(s3_endpoint, tmp_path):
    """Base model, training file and finetuned checkpoints all on the real S3 server; DONE marks a whole model."""
    import s3fs

    from lmc_ray.compute import sources

    fs = s3fs.S3FileSystem()
    fs.mkdir("ftbucket")
    data = toynli.write(tmp_path / "data", n_train=100, n_val=16, per_subcase=2)
    fs.put_file(str(data["train"]), "ftbucket/data/train.jsonl")
    base = _base(tmp_path, toynli.generate(n_train=100)["train"])
    for f in base.iterdir():
        fs.put_file(str(f), f"ftbucket/base/{f.name}")
    relay = S3Relay(s3_endpoint)
    cfg = finetune.from_dict({
        "base": "s3://ftbucket/base", "labels": toynli.LABELS, "output": "s3://ftbucket/models", "seeds": [3], "epochs": 1,
        "reports": 1, "cache_dir": str(tmp_path / "cache"), "storage_options": {"endpoint_url": relay.url},
        "train": {"path": "s3://ftbucket/data/train.jsonl", "text": ["premise", "hypothesis"], "label": "label"}})
    finetune.train(cfg, 3)
    assert finetune.exists(cfg, 3) and fs.exists("ftbucket/models/seed_3/model.safetensors")
    # DONE is uploaded after every other file: the requests the S3 server received, in order.
    writes = [path for method, path in relay.requests if method in ("PUT", "POST") and "/models/seed_3/" in path]
    assert len(writes) > 3 and writes[-1].endswith("/seed_3/DONE") and sum("DONE" in w for w in writes) == 1, writes
    local = sources.resolve("s3://ftbucket/models/seed_3", str(tmp_path / "cache"))
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(local).config.id2label[1] == "non-entailment"
    # An upload cut short before its DONE marker is not a finished model: that seed is trained again.
    for f in fs.ls("ftbucket/models/seed_3"):
        if not f.endswith("DONE"):
            fs.copy(f, f.replace("seed_3", "seed_4"))
    assert not finetune.exists(cfg, 4)
    relay.close()


@pytest.mark.slow
def test_a_killed_finetune_job_resumes_its_tune_experiment(tmp_path):
    """SIGKILL jobs/finetune.py (and the Ray it started) once one of three seeds is saved; the same command
    restores the Tune experiment (Tuner.restore), trains the rest and leaves the saved model untouched."""
    from conftest import ROOT

    data = toynli.write(tmp_path / "data", n_train=1500, n_val=64, per_subcase=10)
    spec = lambda name: {"path": str(data[name]), "text": ["premise", "hypothesis"], "label": "label"}  # noqa: E731
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump({
        "base": str(_base(tmp_path, toynli.generate(n_train=1500)["train"])), "train": spec("train"),
        "eval_sets": [{"name": "validation", **spec("validation")}], "labels": toynli.LABELS,
        "output": str(tmp_path / "models"), "seeds": 3, "epochs": 2, "reports": 2}))
    # Two CPUs per trial on this 2-core machine: one trial at a time, so the kill lands between seeds.
    command = [sys.executable, str(ROOT / "jobs" / "finetune.py"), "--config", str(tmp_path / "ft.yaml"),
               "--experiment-dir", str(tmp_path / "tune"), "--cpus-per-trial", "2"]
    done = lambda: sorted(s for s in range(3) if (tmp_path / "models" / f"seed_{s}" / "DONE").exists())  # noqa: E731
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not done() and first.poll() is None and time.time() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    saved = done()
    assert 1 <= len(saved) < 3, saved
    before = {s: (tmp_path / "models" / f"seed_{s}" / "model.safetensors").stat().st_mtime_ns for s in saved}
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming the Tune experiment" in rerun.stderr
    assert done() == [0, 1, 2]
    assert all((tmp_path / "models" / f"seed_{s}" / "model.safetensors").stat().st_mtime_ns == t for s, t in before.items())
    # The seed that was training when the job died was trained again from the start, not taken half-done.
    killed = [s for s in range(3) if s not in saved]
    assert all((tmp_path / "models" / f"seed_{s}" / "model.safetensors").stat().st_mtime_ns > max(before.values())
               for s in killed)


@pytest.mark.slow
def test_finetune_trials_get_gpus_an_autoscaler_starts(tmp_path):
    """On a GPU cluster that starts with no GPU node (Ray's fake autoscaling cluster: a CPU head, GPU workers on
    demand), `--gpus-per-trial auto` asks 1 GPU per trial from what the autoscaler may start, which starts the
    workers; each trial trains (on the CPU here: the GPUs are fake) the same weights as the seed trained alone."""
    from safetensors.torch import load_file

    from conftest import ROOT, fake_gpu_cluster

    data = toynli.write(tmp_path / "data", n_train=200, n_val=32, per_subcase=4)
    spec = lambda name: {"path": str(data[name]), "text": ["premise", "hypothesis"], "label": "label"}  # noqa: E731
    raw = {"base": str(_base(tmp_path, toynli.generate(n_train=200)["train"])), "train": spec("train"),
           "eval_sets": [], "labels": toynli.LABELS, "output": str(tmp_path / "models"), "seeds": 2, "epochs": 1,
           "reports": 1}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(raw))
    with fake_gpu_cluster(tmp_path, max_workers=2) as (env, address, _):
        run = subprocess.run([sys.executable, str(ROOT / "jobs" / "finetune.py"), "--config", str(tmp_path / "ft.yaml"),
                              "--experiment-dir", str(tmp_path / "tune")], env={**env, "RAY_ADDRESS": address},
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "2 trial(s) to train, each with 1 CPU and 1 GPU" in run.stderr, run.stderr[-3000:]
        status = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"^ *[12] gpu_worker$", status, re.M), status  # started for the trials
    alone = finetune.from_dict(raw | {"output": str(tmp_path / "alone")})
    for seed in (0, 1):
        finetune.train(alone, seed, threads=1)
        got, want = (load_file(str(tmp_path / d / f"seed_{seed}" / "model.safetensors")) for d in ("models", "alone"))
        assert all(torch.equal(got[k], want[k]) for k in want), f"seed {seed} differs from the seed trained alone"


def test_lora_adapters_of_a_causal_lm_train_and_sweep(tmp_path):
    """No labels and `lora:`: each seed trains a PEFT adapter of a GPT-2 base on next-token prediction. The saved
    folder is an adapter that names the base as configured; training lowers the text loss; seeds differ; and the
    sweep's α = 0 and α = 1 points score what training last reported for those seeds."""
    import json

    import pandas as pd

    from lmc_ray.execution import local, plan
    from lmc_ray import config
    from lmc_ray.storage.store import Store
    from lmc_ray.testing.lm_population import make_lm_population

    cola = Path(__file__).resolve().parents[2] / "shared" / "data" / "cola"
    read = lambda f: pd.read_csv(cola / f, sep="\t", header=None, quoting=3, names=["src", "label", "mark", "sentence"])
    read("in_domain_train.tsv")[["sentence"]].head(256).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    read("in_domain_dev.tsv")[["sentence"]].head(64).to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    (start,) = make_lm_population(tmp_path, 0, list(read("in_domain_train.tsv").sentence))
    text = lambda name: {"name": name, "path": str(tmp_path / f"{name}.jsonl"), "text": ["sentence"]}
    # The base: every weight of a random GPT-2 trained on the text (a causal LM finetuned whole).
    whole = {"base": str(start), "train": text("train"), "eval_sets": [text("dev")], "output": str(tmp_path / "lm"),
             "seeds": [0], "epochs": 2, "batch_size": 16, "lr": 5e-3, "reports": 2}
    pretrained = finetune.train(finetune.from_dict(whole), 0)
    assert pretrained["dev/loss"] < 5.5  # from ln(400) = 5.99, uniform over the vocabulary
    base = tmp_path / "lm" / "seed_0"
    cfg = finetune.from_dict(whole | {"base": str(base), "output": str(tmp_path / "ads"), "seeds": [0, 1],
                                      "lora": {"r": 4, "targets": ["c_attn", "c_fc"]}})
    reports = {}
    for seed in cfg.seeds:
        seen = []
        finetune.train(cfg, seed, report=seen.append)
        reports[seed] = seen
    folder = tmp_path / "ads" / "seed_0"
    assert {"adapter_config.json", "adapter_model.safetensors", "DONE"} <= {f.name for f in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base) and adapter["r"] == 4
    assert reports[0][-1]["dev/loss"] < pretrained["dev/loss"] - 0.005  # it learned more of the text
    assert reports[0][-1]["dev/loss"] != reports[1][-1]["dev/loss"]

    sweep = config.from_dict({"models": [str(folder), str(tmp_path / "ads" / "seed_1")], "eval_sets": [text("dev")],
                              "store": str(tmp_path / "store"), "alphas": [0.0, 0.5, 1.0],
                              "cache_dir": str(tmp_path / "cache")})
    p = plan.prepare(sweep)
    local.run(p, progress=False)
    rows = Store(p.cfg.store).curves().to_table().to_pandas().sort_values("alpha")
    assert rows.loss.iloc[0] == pytest.approx(reports[0][-1]["dev/loss"], abs=1e-5)
    assert rows.loss.iloc[-1] == pytest.approx(reports[1][-1]["dev/loss"], abs=1e-5)
    assert rows.accuracy.iloc[0] == pytest.approx(reports[0][-1]["dev/accuracy"], abs=1e-6)


def test_lora_needs_a_causal_lm_and_labels_need_a_classifier(tmp_path):
    from lmc_ray.config import ConfigError
    from lmc_ray.testing.lm_population import make_lm_population

    raw = {"base": "x", "train": {"path": "t.jsonl", "text": ["s"]}, "output": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match="lora trains adapters of causal LMs"):
        finetune.from_dict(raw | {"labels": ["a", "b"], "train": raw["train"] | {"label": "l"}, "lora": {}})
    (lm,) = make_lm_population(tmp_path, 0, ["some words to learn a tokenizer from"] * 20)
    with pytest.raises(ConfigError, match=f"base '{lm}' is a causal LM: drop labels"):
        finetune.train(finetune.from_dict(raw | {"base": str(lm), "labels": ["a", "b"],
                                                  "train": raw["train"] | {"label": "l"}}), 0)
