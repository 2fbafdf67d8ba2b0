"""θ(α) = (1−α)·θ_A + α·θ_B (and a plane's three-way mix), written in place into one resident working model.

No state dict is built per α: the floating-point tensors of the working model are overwritten in place by
foreach kernels (a few launches for all ~200 tensors of a BERT, not one per tensor — what a GPU pays for),
on whatever device the model lives on. Integer buffers are taken from A.
"""
from __future__ import annotations

import torch

Weights = dict[str, torch.Tensor]


class WorkingModel:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._targets = dict(model.state_dict(keep_vars=True))
        self._floats = [k for k, t in self._targets.items() if t.is_floating_point()]
        self._others = [k for k, t in self._targets.items() if not t.is_floating_point()]

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
        for k in self._others:
            self._targets[k].copy_(a[k])
        targets = [self._targets[k] for k in self._floats]
        ends = [a[k] for k in self._floats]
        if b is None or alpha == 0.0:
            torch._foreach_copy_(targets, ends)
        elif targets[0].dtype == ends[0].dtype:  # lerp in place: t = a, then t += α(b − t) — torch.lerp's own kernel
            torch._foreach_copy_(targets, ends)
            torch._foreach_lerp_(targets, [b[k] for k in self._floats], alpha)
        else:  # low-precision working copy: mix in fp32, round once
            torch._foreach_copy_(targets, torch._foreach_lerp(ends, [b[k] for k in self._floats], alpha))

    @torch.no_grad()
    def set_plane(self, a: Weights, b: Weights, c: Weights, s: float, t: float) -> None:
        """θ_A + s(θ_B − θ_A) + t(θ_C − θ_A) (a point of the plane through three models), mixed in the resident
        fp32 weights and rounded once into the working model."""
        for k in self._others:
            self._targets[k].copy_(a[k])
        ends = [a[k] for k in self._floats]
        mixed = torch._foreach_add(ends, torch._foreach_sub([b[k] for k in self._floats], ends), alpha=s)
        torch._foreach_add_(mixed, torch._foreach_sub([c[k] for k in self._floats], ends), alpha=t)
        torch._foreach_copy_([self._targets[k] for k in self._floats], mixed)

