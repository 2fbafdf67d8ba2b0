"""θ(α) = (1−α)·θ_A + α·θ_B (and a plane's three-way mix), written in place into one resident working model.

No state dict is built per α: the floating-point tensors of the working model are overwritten in place by
foreach kernels (a few launches for all ~200 tensors of a BERT, not one per tensor — what a GPU pays for),
on whatever device the model lives on. Integer buffers are taken from A. A tensor tied to another (GPT-2's
output layer is its embedding table) is held and written once.

A population of LoRA adapters (adapters.py) is held as one base and each adapter's factors. The point
base + (1−α)ΔW_A + αΔW_B is the line between the two merged models, and it is written exactly so: each target
weight becomes W_base + [(1−α)U_A, αU_B]·[V_A; V_B], one matmul of rank r_A + r_B per target, in fp32, rounded
once into the working copy. No dense ΔW is kept, so an adapter costs its factors, and adapters of different
ranks or targets mix as they are (their ΔW live in the base's space).
"""
from __future__ import annotations

import torch

from .adapters import U, V, delta, targets as adapter_targets

Weights = dict[str, torch.Tensor]


class WorkingModel:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._targets = dict(model.state_dict(keep_vars=True))
        seen, self._canon = {}, {}
        for k, t in self._targets.items():
            self._canon[k] = seen.setdefault((t.data_ptr(), t.numel()), k) if t.numel() else k
        unique = [k for k in self._targets if self._canon[k] == k]
        self._floats = [k for k in unique if self._targets[k].is_floating_point()]
        self._others = [k for k in unique if not self._targets[k].is_floating_point()]
        self.base: Weights | None = None  # set for a population of LoRA adapters (use_base)
        self._written: set[str] = set()  # targets that hold an adapter mix, not the base

    @torch.no_grad()
    def use_base(self, base: Weights) -> None:
        """From now on every model is an adapter of `base` (resident weights, weights_of), which the working model
        holds wherever no adapter writes."""
        keys = self._floats + self._others
        torch._foreach_copy_([self._targets[k] for k in keys], [base[k] for k in keys])
        self.base, self._written = base, set()

    def weights_of(self, state: Weights) -> Weights:
        """A model's full state (an adapter's factors) on the working model's device, kept for the sweep (fp32 for
        exact mixing)."""
        device = self._targets[self._floats[0]].device
        if self.base is not None:
            return {self._canon[k[:-3]] + k[-3:]: v.detach().to(device, torch.float32, copy=True)
                    for k, v in state.items()}
        out = {}
        for k in self._floats + self._others:
            # Always a copy: the working model may have been built from this very model's tensors.
            v = state[k].detach().to(device, copy=True)
            out[k] = v.float() if v.is_floating_point() else v
        return out

    @torch.no_grad()
    def mix(self, terms: list[tuple[float, Weights]]) -> None:
        """base + Σ c·ΔW over (c, adapter) terms, written into the working model (adapter populations)."""
        base = self.base
        touched = {p for _, w in terms for p in adapter_targets(w)}
        for p in self._written - touched:
            self._targets[p].copy_(base[p])
        for p in touched:
            us = [c * w[p + U] for c, w in terms if p + U in w]
            vs = [w[p + V] for c, w in terms if p + U in w]
            self._targets[p].copy_(torch.addmm(base[p], torch.cat(us, 1), torch.cat(vs, 0)))
        self._written = touched

    def differences(self, a: Weights, others: list[Weights]):
        """Per tensor, (θ_o − θ_a for each o in others): what distances and a plane's axes are measured on."""
        if self.base is None:
            for k in self._floats:
                yield [o[k] - a[k] for o in others]
            return
        zero = torch.zeros((), device=self.base[self._floats[0]].device)
        for p in sorted({p for w in (a, *others) for p in adapter_targets(w)}):
            def dense(w, p=p):
                d = delta(w, p)
                return zero if d is None else d

            da = dense(a)
            yield [dense(o) - da for o in others]

    @torch.no_grad()
    def set(self, a: Weights, b: Weights | None = None, alpha: float = 0.0) -> None:
        if self.base is not None:
            return self.mix([(1.0, a)] if b is None or alpha == 0.0 else [(1.0 - alpha, a), (alpha, b)])
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
        if self.base is not None:
            return self.mix([(1.0 - s - t, a), (s, b), (t, c)])
        for k in self._others:
            self._targets[k].copy_(a[k])
        ends = [a[k] for k in self._floats]
        mixed = torch._foreach_add(ends, torch._foreach_sub([b[k] for k in self._floats], ends), alpha=s)
        torch._foreach_add_(mixed, torch._foreach_sub([c[k] for k in self._floats], ends), alpha=t)
        torch._foreach_copy_([self._targets[k] for k in self._floats], mixed)

