"""The compute core: one working model, evaluated at the endpoints, along each line and over planes. Imports no Ray."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from . import packed
from ..errors import ConfigError
from .chord import refine_points
from .data import EvalData
from .evaluate import Evaluator, Examples, Metrics, for_set
from .interpolate import Weights, WorkingModel
from .metrics import LOSS
from .plane import Point, layout
from .work import Line
from .trim import first_token_only

# tfloat32: fp32 weights and activations, matmuls on TF32 tensor cores (GPUs since Ampere): no CPU has it.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "tfloat32": torch.float32}
# What `dtype: auto` means on GPUs. Against fp32, bf16 moves barriers far less than they differ between pairs and
# leaves the basins as they are (benchmarks/dtype_error.py measures it; docs/performance.md has the figures); fp16
# comes closer but has not fp32's range, so a large logit can overflow; TF32 lands between the two at half bf16's
# tensor-core rate and twice its memory, so it is a choice (`dtype: tfloat32`), not the default. CPUs keep the
# paper's fp32.
GPU_DTYPE = "bfloat16"
# Tokens per batch when the config says auto. On a CPU small padded batches are faster (less padding, and
# activations stay in cache): 2048 beat 8192 on the 2-core benchmark machine (benchmarks/techniques.py measures
# both; docs/performance.md has its figures). A GPU wants enough rows per kernel to fill it; packed, a 512-example set is one
# stream of ~16k real tokens (benchmarks/gpu.py tries several).
BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
PACKED_TOKENS = 32768


def use_threads(n: int) -> None:
    """n torch threads in this process, and n inductor compile workers: its default, one per core of the machine,
    makes N actors on one node fork N × cores compilers when they first compile."""
    import torch._inductor.config as inductor

    torch.set_num_threads(n)
    inductor.compile_threads = n


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def concrete_dtype(dtype: str, gpus: bool) -> str:
    if dtype == "tfloat32" and not gpus:
        raise ConfigError("dtype 'tfloat32': TF32 is a matmul mode of GPUs (Ampere or newer) and this runs on CPUs; "
                          "use float32")
    return (GPU_DTYPE if gpus else "float32") if dtype == "auto" else dtype


def use_packing(packing: str | bool, model: torch.nn.Module, device: torch.device) -> bool:
    """auto: on GPUs, for the architectures packed.py knows. On a CPU FlexAttention runs a dense reference path
    that is slower than padding (benchmarks/gpu.py at toy size shows it)."""
    if packing == "auto":
        return device.type == "cuda" and packed.supported(model)
    if packing and not packed.supported(model):
        raise packed.refusal(model.config.model_type)
    return bool(packing)


class Core:
    """Owns the device-side state of one process: the working model and the batched eval sets."""

    def __init__(self, template: torch.nn.Module, datas: list[EvalData], device="cpu", dtype="float32",
                 batch_tokens: int | str = "auto", max_batch_size: int = 256, on_line: list[int] | None = None,
                 packing: str | bool = "auto", graphs: bool = True, compiler="auto", compile_whole: bool = False,
                 fused_qkv: bool = True):
        """`template` is copied, never changed: its weights may still be read as a model's resident ones.
        Packed only: `compiler` is the torch.compile backend of the attention (auto: inductor on GPUs, none on
        CPUs, where eager FlexAttention is exact), `compile_whole` compiles the whole forward with it, `fused_qkv`
        projects queries, keys and values in one matmul (benchmarks/gpu.py measures both levers)."""
        self.device = pick_device(device) if isinstance(device, str) else device
        self.dtype = concrete_dtype(dtype, self.device.type == "cuda")
        if self.device.type == "cuda":  # process-wide; set by each Core so that one dtype never leaks into another's
            torch.set_float32_matmul_precision("high" if self.dtype == "tfloat32" else "highest")
        model = copy.deepcopy(template).to(self.device, DTYPES[self.dtype]).eval()
        first_token_only(model)
        self.packing = use_packing(packing, model, self.device)
        if batch_tokens == "auto":
            batch_tokens = PACKED_TOKENS if self.packing else BATCH_TOKENS.get(self.device.type, 8192)
        forward = None
        if self.packing:
            batch_tokens = packed.stream_tokens(batch_tokens, datas)
            if compiler == "auto":
                compiler = "inductor" if self.device.type == "cuda" else None
            forward = packed.PackedForward(model, compiler, compile_whole, fused_qkv)
        self.working = WorkingModel(model)  # after fusing: it writes into the parameters the forward reads
        self.evaluators = [for_set(d)(
            d, model, self.device, batch_tokens, max_batch_size, forward, graphs) for d in datas]
        # The sets evaluated along the lines (config.on_line); None: every one.
        self.on_line = list(range(len(datas))) if on_line is None else on_line

    def resident(self, state: Weights) -> Weights:
        return self.working.weights_of(state)

    def use_base(self, state: Weights) -> Weights:
        """Every model from now on is a LoRA adapter of this base (interpolate.py); returns its resident copy."""
        base = self.working.weights_of(state)
        self.working.use_base(base)
        return base

    def _point(self, evaluators: list[Evaluator], keep_examples: bool) -> list[torch.Tensor]:
        """The current working model on `evaluators`, left on the device: each set's summary (and per-example
        values); copies, since a replayed CUDA graph writes its output in the same place every time."""
        out = [ev.summary().clone() for ev in evaluators]
        return out + [ev.per_example() for ev in evaluators] if keep_examples else out

    @staticmethod
    def _host(points: dict[float, list[torch.Tensor]], evaluators: list[Evaluator], keep_examples: bool):
        """Every point's device tensors to the host in one copy, as (metrics, per-example values) per α."""
        keys = list(points)
        tensors = [t for al in keys for t in points[al]]
        flat = torch.cat([t.double().flatten() for t in tensors]).cpu().numpy()
        parts = np.split(flat, np.cumsum([t.numel() for t in tensors])[:-1])
        metrics, examples, n = {}, {}, len(evaluators)
        for k, al in enumerate(keys):
            mine = parts[k * len(points[al]): (k + 1) * len(points[al])]
            metrics[al] = [ev.metrics(p.reshape(-1, ev.width)) for ev, p in zip(evaluators, mine)]
            if keep_examples:
                examples[al] = [p.reshape(2, -1).astype(np.float32) for p in mine[n:]]
        return metrics, examples if keep_examples else None

    def endpoint(self, a: Weights, keep_examples: bool = False,
                 sets: tuple[int, ...] = ()) -> tuple[list[Metrics], list[Examples] | None]:
        """Model a alone on the eval sets `sets` (empty: every one): metrics, and per-example values when asked."""
        self.working.set(a)
        evaluators = [self.evaluators[k] for k in sets] if sets else self.evaluators
        metrics, examples = self._host({0.0: self._point(evaluators, keep_examples)}, evaluators, keep_examples)
        return metrics[0.0], examples[0.0] if keep_examples else None

    def curve(self, a: Weights, b: Weights, alphas: list[float], refine: int, end_losses: tuple[float, float],
              keep_examples: bool = False, sets: tuple[int, ...] = ()) -> Line:
        """The interior of the line on the line sets `sets` (empty: every one); endpoints are each model alone and
        are evaluated once per model. `refine` rounds add α around the peak (chord.refine_points), judged by the
        first set's loss. With keep_examples, also each α's per-example values (for bootstrap intervals)."""
        evaluators = [self.evaluators[k] for k in sets or self.on_line]
        points = {}
        distance = torch.stack([d.pow(2).sum() for (d,) in self.working.differences(a, [b])])

        def point(al):
            self.working.set(a, b, al)
            points[al] = self._point(evaluators, keep_examples)

        for al in alphas:
            if 0.0 < al < 1.0:
                point(al)
        for _ in range(refine):  # one host copy per round: the next α depend on the losses so far
            losses = {al: float(m[0][0, LOSS]) for al, m in self._host(points, evaluators, False)[0].items()}
            for al in refine_points(losses, end_losses):
                point(al)
        interior, examples = self._host(points, evaluators, keep_examples)
        return Line(interior, examples, float(distance.sum().sqrt()))

    def plane(self, a: Weights, b: Weights, c: Weights, n: int, margin: float) -> tuple[list[Point], list[list[Metrics]]]:
        """The plane through a, b and c on the line sets: its points (plane.layout: the three models, then an
        n × n grid in true distances) and each point's metrics per set, copied to the host once."""
        evaluators = [self.evaluators[k] for k in self.on_line]
        sums = torch.stack([torch.stack([db.pow(2).sum(), dc.pow(2).sum(), (db * dc).sum()])
                            for db, dc in self.working.differences(a, [b, c])]).double().sum(0).cpu().tolist()
        points = layout(math.sqrt(sums[0]), sums[2], math.sqrt(sums[1]), n, margin)
        values = {}
        for p in points:
            self.working.set_plane(a, b, c, p.s, p.t)
            values[p] = self._point(evaluators, False)
        metrics, _ = self._host(values, evaluators, False)
        return points, [metrics[p] for p in points]

