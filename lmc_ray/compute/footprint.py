"""What one process needs on its device, counted before anything is moved there, and the refusal when it does not
fit: the sweep's memory plan (docs/language-models.md prints it for 7B-class bases).

A process holds, on its device: every resident model's weights in fp32 (for exact mixing: the base once for a
population of adapters, and each adapter's factors; or each full model), one working copy in the sweep's dtype,
and while it evaluates one batch of logits in fp32 with their cross-entropy beside them (a causal LM's logits
are tokens × vocabulary; a classifier's are negligible).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError

GiB = 2**30
# A float32 logits batch, its softmax for the cross-entropy, and the argmax's scratch: what one batch adds.
LOGIT_COPIES = 3
HEADROOM = 0.9  # of the free memory: CUDA's context, the allocator's caching and fragmentation take the rest


@dataclass
class Footprint:
    resident: int  # bytes of fp32 weights held for the models (the base included)
    working: int  # the working copy in the sweep's dtype
    logits: int  # one batch of logits and what the loss needs beside them

    @property
    def total(self) -> int:
        return self.resident + self.working + self.logits


def params(model: torch.nn.Module) -> int:
    """Floating-point values in the model's state, a tied tensor once (what interpolate.WorkingModel holds)."""
    seen = {}
    for t in model.state_dict().values():
        if t.is_floating_point():
            seen[(t.data_ptr(), t.numel())] = t.numel()
    return sum(seen.values())


def estimate(params: int, dtype_bytes: int, model_bytes: list[int], base: bool, batch_tokens: int,
             vocab: int | None) -> Footprint:
    """`params` of the architecture; `model_bytes` what each resident model adds in fp32 (an adapter's factors,
    or a full model's 4·params); `base`: the base is held once besides them; `vocab`: a causal LM's logits."""
    return Footprint(4 * params * base + sum(model_bytes), dtype_bytes * params,
                     LOGIT_COPIES * 4 * batch_tokens * vocab if vocab else 0)


def check(device: torch.device, need: Footprint, models: int, what: str) -> None:
    """On a GPU, refuse in one line, with the numbers, a block of models that cannot fit its free memory."""
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if need.total > HEADROOM * free:
        raise ConfigError(
            f"{models} {what} on one GPU need {need.total / GiB:.1f} GiB (fp32 weights held {need.resident / GiB:.1f}, "
            f"working copy {need.working / GiB:.1f}, logits {need.logits / GiB:.1f}) but {device} has "
            f"{free / GiB:.1f} of {total / GiB:.1f} GiB free; use more actors (fewer models each), or fewer "
            "batch_tokens")
