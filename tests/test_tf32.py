import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmc_ray import config
from lmc_ray.errors import ConfigError
from lmc_ray.execution import local, plan
from lmc_ray.storage.store import Store
from lmc_ray.testing.tf32 import emulated, to_tf32

from conftest import sweep_config

ULP = 2.0 ** -10  # TF32's spacing just above 1.0


def test_tf32_keeps_ten_mantissa_bits_rounding_to_nearest_even_or_truncating():
    x = torch.tensor([1 + ULP / 2, 1 + 1.5 * ULP, 1 + 0.75 * ULP, 1 + 0.25 * ULP, -(1 + 0.75 * ULP), 3.0,
                      float("inf"), -float("inf"), 0.0])
    # ties go to the even neighbour: 1 + ½ulp -> 1, 1 + 1½ulp -> 1 + 2ulp
    assert to_tf32(x).tolist() == [1.0, 1 + 2 * ULP, 1 + ULP, 1.0, -(1 + ULP), 3.0, float("inf"), -float("inf"), 0.0]
    assert to_tf32(x, "truncate").tolist() == [1.0, 1 + ULP, 1.0, 1.0, -1.0, 3.0, float("inf"), -float("inf"), 0.0]
    r = torch.randn(100_000) * 10.0 ** torch.randint(-20, 20, (100_000,))
    for rounding, bound in (("nearest", 2.0 ** -11), ("truncate", 2.0 ** -10)):
        t = to_tf32(r, rounding)
        assert torch.equal(to_tf32(t, rounding), t)  # already representable: unchanged
        assert ((t - r).abs() / r.abs()).max() <= bound
    assert torch.equal(to_tf32(r.double()), r.double())  # only fp32 is cut
    with pytest.raises(ValueError, match="rounding 'up'"):
        emulated("up")


def test_emulated_matmuls_multiply_tf32_operands_and_attention_keeps_its_mask():
    torch.manual_seed(0)
    x, w, b = torch.randn(8, 64), torch.randn(32, 64), torch.randn(32)
    with emulated():
        got = F.linear(x, w, b)
        prod = x @ w.T
    assert torch.equal(got, F.linear(to_tf32(x), to_tf32(w), b)) and not torch.equal(got, F.linear(x, w, b))
    assert torch.equal(prod, to_tf32(x) @ to_tf32(w).T)
    q, k, v = (torch.randn(2, 2, 5, 16) for _ in range(3))
    keep = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    keep[0, ..., 3:] = False  # the first example's last two keys are padding
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    for mask in (keep, additive, None):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        with emulated():
            got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        d = (got - want).abs().max()
        assert 0 < d < 1e-2, d


def test_a_sweep_under_emulated_tf32_stays_near_float32_and_tfloat32_is_refused_on_cpus(tmp_path, population):
    """The error benchmarks/dtype_error.py reports for TF32 on a CPU: losses move, by less than fp16's bound in
    tests/test_core.py (both keep 10 mantissa bits, TF32 only in matmul operands). Asking a CPU sweep for the
    real thing is one line before the store opens."""
    curves = {}
    for name, mode in (("float32", contextlib.nullcontext()), ("nearest", emulated("nearest")),
                       ("truncate", emulated("truncate"))):
        p = plan.prepare(config.from_dict(sweep_config(population[:3], tmp_path / name, alphas=5)))
        with mode:
            local.run(p, progress=False)
        curves[name] = Store(p.cfg.store).curves().to_table().to_pandas().sort_values(
            ["model_a", "model_b", "alpha", "subset"]).loss.to_numpy()
    errors = {k: np.abs(curves[k] - curves["float32"]).max() for k in ("nearest", "truncate")}
    assert 0 < errors["nearest"] < 5e-4 and 0 < errors["truncate"] < 5e-4, errors
    with pytest.raises(ConfigError, match="dtype 'tfloat32'.*GPUs") as e:
        plan.prepare(config.from_dict(sweep_config(population[:2], tmp_path / "tf32", dtype="tfloat32")))
    assert "\n" not in str(e.value) and not (tmp_path / "tf32").exists()
