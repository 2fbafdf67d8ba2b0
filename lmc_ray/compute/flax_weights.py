"""Checkpoints that hold only `flax_model.msgpack` (the Flax trainer's, as the paper's CoLA models) as PyTorch ones.

transformers 5 reads no Flax weights. The file is flax.serialization's msgpack: nested maps of arrays, each an
ext record (shape, dtype name, raw bytes). The names and layouts follow the rules transformers' own converter
used: nested keys joined with ".", `kernel` → `weight` (a dense kernel transposed, a conv kernel's HWIO made
OIHW), `embedding` and `scale` → `weight`.
"""
from __future__ import annotations

import msgpack
import numpy as np
import torch

_NDARRAY, _NPSCALAR = 1, 3  # flax.serialization's ext codes


def _ext(code: int, data: bytes):
    if code not in (_NDARRAY, _NPSCALAR):
        raise ValueError(f"msgpack ext type {code} is not an array")
    shape, dtype, buffer = msgpack.unpackb(data, raw=False)
    if dtype == "bfloat16":  # no numpy dtype without ml_dtypes; torch reads the bits
        return torch.frombuffer(bytearray(buffer), dtype=torch.bfloat16).reshape(shape).clone()
    return torch.from_numpy(np.frombuffer(buffer, dtype=dtype).reshape(shape).copy())


def state_dict(blob: bytes) -> dict[str, torch.Tensor]:
    """PyTorch-named tensors from the bytes of a flax_model.msgpack."""
    tree = msgpack.unpackb(blob, ext_hook=_ext, raw=False, strict_map_key=False)
    out: dict[str, torch.Tensor] = {}

    def walk(node: dict, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, (*path, str(key)))
                continue
            leaf = str(key)
            if leaf == "kernel":
                value = value.T if value.ndim == 2 else value.permute(3, 2, 0, 1) if value.ndim == 4 else value
                leaf = "weight"
            elif leaf in ("embedding", "scale"):
                leaf = "weight"
            out[".".join((*path, leaf))] = value.contiguous()

    walk(tree, ())
    return out
