"""θ(α) = (1−α)·θ_A + α·θ_B, written in place into one resident working model.

No state dict is built per α: each floating-point tensor of the working model is overwritten by a
single lerp kernel, on whatever device the model lives on. Integer buffers are taken from A.
"""
from __future__ import annotations

import torch

Weights = dict[str, torch.Tensor]


class WorkingModel:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._targets = dict(model.state_dict(keep_vars=True))

    def weights_of(self, state: Weights) -> Weights:
        """A model's full state on the working model's device, kept for the sweep (fp32 for exact mixing)."""
        out = {}
        for k, t in self._targets.items():
            # Always a copy: the working model may have been built from this very model's tensors.
            v = state[k].detach().to(t.device, copy=True)
            out[k] = v.float() if v.is_floating_point() else v
        return out

    @torch.no_grad()
    def set(self, a: Weights, b: Weights | None = None, alpha: float = 0.0) -> None:
        for k, t in self._targets.items():
            if b is None or not t.is_floating_point() or alpha == 0.0:
                t.copy_(a[k])
            elif t.dtype == a[k].dtype:
                torch.lerp(a[k], b[k], alpha, out=t)
            else:  # low-precision working copy: mix in fp32, round once
                t.copy_(torch.lerp(a[k], b[k], alpha))
