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
