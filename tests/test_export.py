"""A point of a stored line exported as a model: loadable with from_pretrained, and the same function as the
sweep evaluated there."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.compute.data import read_table
from lmc_ray.errors import ConfigError
from lmc_ray.analysis.export import export
from lmc_ray.storage.store import Store

from conftest import NLI_LABELS, ROOT, sweep_config
from test_core import reference_metrics


def test_an_exported_point_is_the_model_the_sweep_evaluated(tmp_path, population):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store", alphas=[0.0, 0.3, 1.0]))
    local.run(plan.prepare(cfg), progress=False)
    a, b = (str(p) for p in population[:2])
    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "export.py"), "--store", str(tmp_path / "store"),
                          "--pair", a, b, "--alpha", "0.3", "--out", str(tmp_path / "merged")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    df = read_table(cfg.eval_sets[0])
    with torch.no_grad():
        logits = torch.stack([model(**tok(p, h, return_tensors="pt")).logits[0] for p, h in zip(df.premise, df.hypothesis)])
    labels = [NLI_LABELS.index(v) for v in df.gold_label]
    stored = Store(str(tmp_path / "store")).curves().to_table().to_pandas().query("alpha == 0.3 and subset == 'all'")
    np.testing.assert_allclose(reference_metrics(logits, labels), stored[["loss", "accuracy", "f1", "mcc"]].to_numpy()[0],
                               atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="model 'nope' is not in the store"):
        export(Store(str(tmp_path / "store")), a, "nope", 0.5, str(tmp_path / "x"))


def test_export_never_overwrites_what_is_not_its_own(tmp_path, population):
    """--out a source model's folder, a store's curves, a folder inside the store, a read-only folder: each
    refused in one line before any model is loaded, nothing touched; an earlier export is replaced whole."""
    import os

    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store", alphas=3))
    local.run(plan.prepare(cfg), progress=False)
    a, b = (str(p) for p in population[:2])
    weights = (population[0] / "model.safetensors").read_bytes()

    def run(out, *prefix):
        return subprocess.run([*prefix, sys.executable, str(ROOT / "jobs" / "export.py"), "--store",
                               str(tmp_path / "store"), "--pair", a, b, "--alpha", "0.5", "--out", str(out)],
                              capture_output=True, text=True, timeout=300)

    for out, why in ((population[0], "exists and is not an earlier export; give a new or empty folder"),
                     (tmp_path / "store" / "curves", f"inside the store {str(tmp_path / 'store')!r}; write the model elsewhere"),
                     (tmp_path / "store" / "merged", f"inside the store {str(tmp_path / 'store')!r}; write the model elsewhere")):
        done = run(out)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.splitlines() == [f"lmc-ray: error: export --out {str(out)!r}: {why}"]
    assert (population[0] / "model.safetensors").read_bytes() == weights
    assert sorted(os.listdir(tmp_path / "store")) == ["curves", "endpoints", "run.json"]
    (tmp_path / "ro").mkdir()
    done = run(tmp_path / "ro" / "m", "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
               f'mount --bind {tmp_path / "ro"} {tmp_path / "ro"} && mount -o remount,bind,ro {tmp_path / "ro"} '
               '&& exec "$@"', "sh")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"lmc-ray: error: export --out {str(tmp_path / 'ro' / 'm')!r}: not writable (Read-only file system)"]
    for _ in range(2):  # the second replaces the first
        done = run(tmp_path / "merged")
        assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")) == []
    assert (tmp_path / "merged" / "model.safetensors").is_file()
