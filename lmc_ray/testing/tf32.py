"""TF32 matmuls emulated on a CPU, so their error along the lines can be measured where no GPU is.

A GPU in TF32 mode keeps fp32 tensors but feeds its tensor cores each matmul operand cut to TF32: fp32's 8-bit
exponent with a 10-bit mantissa (fp32 has 23), products accumulated in fp32. `emulated()` does that to every
matmul a BERT-style model makes — its linear layers and both products of attention — by rounding the operands
to 10 mantissa bits and multiplying in fp32. Whether a GPU rounds to nearest or truncates the dropped bits
depends on the library path (a kernel can hand raw fp32 bits to the tensor cores, which ignore the low 13), so
both are offered: they bracket what a GPU does. Per operand truncation's error is at most twice rounding's, but it
always shrinks magnitudes, so it adds up over a layer's sums instead of cancelling (docs/performance.md: from about
the same to 25 times rounding's largest barrier error).
Used by benchmarks/dtype_error.py; only fp32 operands are touched.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

DROPPED = 13  # fp32's 23 mantissa bits less TF32's 10
KEEP = -(1 << DROPPED)  # as int32: ones above the dropped bits


def to_tf32(x: torch.Tensor, rounding: str = "nearest") -> torch.Tensor:
    """x cut to TF32 precision, still stored as fp32: to nearest (ties to even), or truncated."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    if rounding == "nearest":  # half of the dropped range, plus one when the kept part is odd: ties go to even
        bits = bits + ((1 << (DROPPED - 1)) - 1 + ((bits >> DROPPED) & 1))
    elif rounding != "truncate":
        raise ValueError(f"rounding {rounding!r}: nearest or truncate")
    return (bits & KEEP).view(torch.float32)


def _attention(r, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if dropout_p or is_causal or enable_gqa:
        raise NotImplementedError("emulated TF32 attention: evaluation only (no dropout, causal mask or GQA)")
    scores = r(query) @ r(key).transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
    return r(torch.softmax(scores, dim=-1)) @ r(value)


class emulated(TorchFunctionMode):
    """Within `with emulated(rounding):` every fp32 matmul of the ops below is computed on TF32 operands."""

    # op -> positions of its two matrix operands
    OPERANDS = {F.linear: (0, 1), torch.matmul: (0, 1), torch.Tensor.matmul: (0, 1), torch.Tensor.__matmul__: (0, 1),
                torch.mm: (0, 1), torch.bmm: (0, 1), torch.addmm: (1, 2), torch.baddbmm: (1, 2)}

    def __init__(self, rounding: str = "nearest"):
        super().__init__()
        to_tf32(torch.zeros(1), rounding)  # a wrong rounding fails here, not at the first matmul
        self.rounding = rounding

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        r = lambda t: to_tf32(t, self.rounding)  # noqa: E731
        if func is F.scaled_dot_product_attention:  # fused on a CPU: its two products are spelled out
            return _attention(r, *args, **kwargs)
        if func in self.OPERANDS:
            args = list(args)
            for k in self.OPERANDS[func]:
                args[k] = r(args[k])
        return func(*args, **kwargs)
