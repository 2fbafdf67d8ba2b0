"""The models one process keeps in memory, and the compute core that evaluates them. Imports no Ray.

Used as is by the in-process executor and wrapped by the Ray actor: the same code decides what is
loaded, checked and evaluated wherever it runs.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from . import adapters, footprint, models as M
from . import sources
from ..config import SweepConfig, on_line
from .core import BATCH_TOKENS, DTYPES, Core, pick_device
from .data import EvalData
from .interpolate import Weights
from .work import Endpoint, EndpointResult, Pair, PairResult, Plane, PlaneResult


class Residents:
    def __init__(self, cfg: SweepConfig, indices: list[int], labels: list[str], datas: list[EvalData],
                 revisions: list[str], base_revision: str | None = None):
        """`cfg.base` set: the models are LoRA adapters of it, pinned at `base_revision`; the base is held once
        and each adapter as its factors (adapters.py)."""
        self.weights: dict[int, Weights] = {}
        self.core = None
        self.base: Weights | None = None
        paths = {i: sources.resolve(cfg.models[i].ref, cfg.cache_dir, cfg.storage_options, revisions[i])
                 for i in indices}
        if cfg.base is not None:
            path = sources.resolve(cfg.base, cfg.cache_dir, cfg.storage_options, base_revision)
            base = M.load(f"base {cfg.base}", path, labels)
            shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
            sizes = [adapters.inspect(cfg.models[i].name, paths[i], shapes).bytes for i in indices]
            self._start(cfg, datas, f"base {cfg.base}", base, sizes)
            del base
        for i in indices:
            spec, path = cfg.models[i], paths[i]
            if self.base is not None:
                self.weights[i] = self.core.resident(adapters.factors(spec.name, path, shapes))
                continue
            model = M.load(spec.name, path, labels, declared=spec.labels)  # fp32; the core casts
            if self.core is None:
                self._start(cfg, datas, spec.name, model, [4 * footprint.params(model)] * len(indices), False)
            else:
                M.check_finite(spec.name, M.float_state(model))
            self.weights[i] = self.core.resident(model.state_dict())
            del model
        self._partner: tuple[int, Weights] | None = None
        self.alphas, self.refine, self.keep_examples = cfg.alphas, cfg.refine, cfg.per_example
        self.n_sets, self.on_line = len(cfg.eval_sets), tuple(on_line(cfg.eval_sets))
        self.planes = cfg.planes

    def _start(self, cfg: SweepConfig, datas: list[EvalData], name: str, model, sizes: list[int],
               adapter_base: bool = True) -> None:
        """The core, its working model a copy of the first model loaded (or of the adapters' base), once the
        models' footprint (`sizes`: each one's fp32 bytes) is known to fit the device."""
        M.check_finite(name, M.float_state(model))
        device = pick_device(cfg.device)
        tokens = cfg.batch_tokens if cfg.batch_tokens != "auto" else BATCH_TOKENS.get(device.type, 8192)
        vocab = model.config.vocab_size if M.kind_of(type(model).__name__) == M.CAUSAL_LM else None
        self.footprint = footprint.estimate(footprint.params(model), DTYPES[cfg.dtype].itemsize if cfg.dtype in DTYPES
                                            else 4, sizes, adapter_base, tokens, vocab)
        footprint.check(device, self.footprint, len(sizes), "adapters" if adapter_base else "models")
        self.core = Core(model, datas, cfg.device, cfg.dtype, cfg.batch_tokens, cfg.max_batch_size,
                         on_line(cfg.eval_sets), cfg.packing)
        if adapter_base:
            self.base = self.core.use_base(model.state_dict())

    def resident_bytes(self) -> int:
        """Bytes of the weights this process holds for its models: the base once (adapters), then each model's own."""
        held = [*(self.base or {}).values(), *(t for w in self.weights.values() for t in w.values())]
        return sum(t.numel() * t.element_size() for t in held)

    def endpoint(self, e: Endpoint) -> EndpointResult:
        """A resident model alone: metrics per eval set, and per-example values when the sweep keeps them."""
        sets = e.sets or tuple(range(self.n_sets))
        return EndpointResult(e.model, sets, *self.core.endpoint(self.weights[e.model], self.keep_examples, sets))

    def export(self, i: int) -> dict[str, np.ndarray]:
        """CPU numpy copy of a model's weights, for other processes (Ray stores numpy without pickling)."""
        return {k: v.cpu().numpy() for k, v in self.weights[i].items()}

    def get(self, i: int, fetch) -> Weights:
        """Weights of model i: resident, or the last fetched partner, or fetched now via `fetch()`."""
        if i in self.weights:
            return self.weights[i]
        if self._partner is None or self._partner[0] != i:
            self._partner = None  # free the previous partner before the next arrives
            with warnings.catch_warnings():  # Ray hands out read-only arrays; resident() copies them
                warnings.simplefilter("ignore", UserWarning)
                fetched = {k: torch.from_numpy(v) for k, v in fetch().items()}
            self._partner = (i, self.core.resident(fetched))
        return self._partner[1]

    def pair(self, pair: Pair, end_losses: tuple[float, float], fetch=None) -> PairResult:
        """The pair's line; `fetch()` brings the weights of whichever of its models is not resident here."""
        wa = self.get(pair.a, fetch)
        wb = self.get(pair.b, fetch)
        sets = pair.sets or self.on_line
        return PairResult(pair, sets, self.core.curve(wa, wb, self.alphas, self.refine, end_losses,
                                                      self.keep_examples, sets))

    def plane(self, plane: Plane, fetch_b=None, fetch_c=None) -> PlaneResult:
        """The plane through three models; `fetch_b` / `fetch_c` bring b's and c's weights when not resident."""
        wa, wb = self.weights[plane.a], self.get(plane.b, fetch_b)
        wc = self.get(plane.c, fetch_c)  # may evict b from the partner slot; wb is still held here
        cfg = self.planes
        return PlaneResult(plane, *self.core.plane(wa, wb, wc, cfg.grid, cfg.margin))

