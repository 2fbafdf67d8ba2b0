"""The compute core: one working model, evaluated at the endpoints and along each line. Imports no Ray."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .barriers import refine_points
from .data import EvalData
from .evaluate import Evaluator, Examples, Metrics
from .interpolate import Weights, WorkingModel
from .metrics import LOSS
from .trim import first_token_only

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Padded tokens per batch when the config says auto. On a CPU small batches are faster (less padding, and
# activations stay in cache): 2048 ran 1.7x faster than 8192 on the 2-core benchmark machine
# (benchmarks/techniques.py). A GPU wants enough rows per kernel to fill it; benchmarks/gpu.py tries several.
BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}


@dataclass
class Line:
    """One pair's line, as the core computed it."""
    interior: dict[float, list[Metrics]]  # α -> metrics per eval set on the lines (endpoints: each model alone)
    examples: dict[float, list[Examples]] | None  # α -> per-example values, when the sweep keeps them
    distance: float  # ‖θ_B − θ_A‖₂ over every floating tensor of the state (the paper logs it per pair)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class Core:
    """Owns the device-side state of one process: the working model and the batched eval sets."""

    def __init__(self, template: torch.nn.Module, datas: list[EvalData], device="cpu", dtype="float32",
                 batch_tokens: int | str = "auto", max_batch_size: int = 256, line: list[bool] | None = None):
        self.device = pick_device(device) if isinstance(device, str) else device
        if batch_tokens == "auto":
            batch_tokens = BATCH_TOKENS.get(self.device.type, 8192)
        model = template.to(self.device, DTYPES[dtype]).eval()
        first_token_only(model)
        self.working = WorkingModel(model)
        self.evaluators = [Evaluator(d, self.device, batch_tokens, max_batch_size) for d in datas]
        self.line = line or [True] * len(datas)  # which sets are evaluated along the lines (not endpoints_only)
        self._last = self.evaluators

    def resident(self, state: Weights) -> Weights:
        return self.working.weights_of(state)

    def evaluate(self, a: Weights, b: Weights | None = None, alpha: float = 0.0, line_only: bool = False) -> list[Metrics]:
        self.working.set(a, b, alpha)
        self._last = [ev for ev, on in zip(self.evaluators, self.line) if on or not line_only]
        return [ev(self.working.model) for ev in self._last]

    def examples(self) -> list[Examples]:
        """Per-example loss and correctness of the latest evaluate, one array per eval set it evaluated."""
        return [ev.examples for ev in self._last]

    def curve(self, a: Weights, b: Weights, alphas: list[float], refine: int, end_losses: tuple[float, float],
              keep_examples: bool = False) -> Line:
        """The interior of the line; endpoints are each model alone and are evaluated once per model.
        `refine` rounds add α around the peak (barriers.refine_points), judged by the first eval set's loss.
        With keep_examples, also each α's per-example values (for bootstrap intervals on the barrier)."""
        out, examples = {}, {} if keep_examples else None

        def point(al):
            out[al] = self.evaluate(a, b, al, line_only=True)
            if keep_examples:
                examples[al] = self.examples()

        for al in alphas:
            if 0.0 < al < 1.0:
                point(al)
        for _ in range(refine):
            losses = {al: float(m[0][0, LOSS]) for al, m in out.items()}
            for al in refine_points(losses, end_losses):
                point(al)
        distance = torch.stack([(b[k] - v).float().pow(2).sum() for k, v in a.items() if v.is_floating_point()])
        return Line(out, examples, float(distance.sum().sqrt()))
