"""The models one process holds (lmc_ray/compute/residents.py): what is resident is the checkpoint, wherever it sits."""
import numpy as np
import pytest
import torch

from lmc_ray import config
from lmc_ray.compute.residents import Residents
from lmc_ray.execution import plan
from lmc_ray.execution.plan import Pair

from conftest import sweep_config


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_residents_are_the_checkpoints_in_every_layout_and_dtype(tmp_path, population, dtype):
    """The first model of a process builds its working model, which is cast to the sweep's dtype: its resident
    weights must still be the fp32 checkpoint, so that a pair's curve is the same whichever process holds which
    model (in bf16 it moved a loss by 1.8e-2 when the template was cast in place)."""
    from transformers import AutoModelForSequenceClassification

    cfg = config.from_dict(sweep_config(population[:3], tmp_path / "store", dtype=dtype, device="cpu", alphas=4))
    p = plan.prepare(cfg)
    layouts = [Residents(cfg, ms, p.labels, p.datas, p.revisions) for ms in ([0, 1, 2], [1, 0], [2, 1])]
    for i in range(3):
        want = AutoModelForSequenceClassification.from_pretrained(population[i]).state_dict()
        for res in layouts:
            if i in res.weights:
                for k, v in want.items():
                    assert res.weights[i][k].dtype == v.dtype and torch.equal(res.weights[i][k], v), (i, k)
    curves = [res.pair(Pair(0, 1), (0.0, 0.0)).line.interior for res in layouts[:2]]
    for al in curves[0]:
        np.testing.assert_array_equal(curves[0][al][0], curves[1][al][0])
