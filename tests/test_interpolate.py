"""θ(α) written in place by foreach kernels equals torch.lerp tensor by tensor; a low-precision working copy is
mixed in fp32 and rounded once."""
import torch

from lmc_ray.compute.interpolate import WorkingModel


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 3))


def _ends(working, model, seed):
    g = torch.Generator().manual_seed(seed)
    return working.weights_of({k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()})


def test_foreach_lerp_equals_torch_lerp_at_every_alpha():
    model = _model()
    w = WorkingModel(model)
    a, b = _ends(w, model, 1), _ends(w, model, 2)
    for alpha in (0.0, 1 / 9, 0.5, 0.7, 1.0):
        w.set(a, b, alpha)
        for k, t in model.state_dict().items():
            assert torch.equal(t, torch.lerp(a[k], b[k], alpha)), (k, alpha)
    w.set(a)
    assert all(torch.equal(t, a[k]) for k, t in model.state_dict().items())


def test_a_bfloat16_working_copy_is_mixed_in_float32_and_rounded_once():
    model = _model().to(torch.bfloat16)
    w = WorkingModel(model)
    a, b = _ends(w, model, 1), _ends(w, model, 2)
    # 1 and 1 + 2⁻⁸ + 2⁻¹⁰ at α = 0.75: mixed in fp32, 1.00366, which bf16 (spacing 2⁻⁷ at 1) rounds to 1;
    # rounded first (b to 1 + 2⁻⁷), then mixed, 1.00586, which rounds up to 1 + 2⁻⁷.
    a["0.weight"].fill_(1.0)
    b["0.weight"].fill_(1.0 + 2 ** -8 + 2 ** -10)
    w.set(a, b, 0.75)
    for k, t in model.state_dict().items():
        assert torch.equal(t, torch.lerp(a[k], b[k], 0.75).to(torch.bfloat16)), k
    assert (model.state_dict()["0.weight"] == 1.0).all()
    rounded_first = torch.lerp(a["0.weight"].bfloat16(), b["0.weight"].bfloat16(), 0.75)
    assert (rounded_first == 1.0 + 2 ** -7).all()  # what mixing in bf16 would have stored
