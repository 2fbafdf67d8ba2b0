"""Everything decided before the first pair runs: models found and checked, data tokenized, store opened.

Bad input is found here, in one pass, and reported as one line before anything is written or any
actor starts. Both executors (in-process and Ray) run a Plan and record results through it.
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from typing import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models as M
from . import schedule, sources
from .config import SweepConfig
from .core import Line, concrete_dtype, pick_device
from .errors import ConfigError, Interrupted
from .data import EvalData, prepare as prepare_data
from .metrics import LOSS
from .packed import PACKABLE
from .store import Layout, Store, endpoint_examples, endpoint_table, metrics_from_endpoint, pair_examples, pair_table

log = logging.getLogger("lmc_ray")


@dataclass
class Plan:
    cfg: SweepConfig
    revisions: list[str]  # each model's pinned weights (sources.inspect); actors load exactly these
    labels: list[str]  # canonical label order
    datas: list[EvalData]
    store: Store
    pairs: list[tuple[int, int]]  # the pairs that get a line (config `pairs`)
    pending: list[tuple[int, int]]  # those not yet in the store

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.cfg.models]

    @property
    def names_of_sets(self) -> list[str]:
        return [d.name for d in self.datas]

    @property
    def layout(self) -> Layout:
        return [(d.name, d.subsets) for d in self.datas]

    @property
    def on_line(self) -> list[int]:
        """The eval sets evaluated along the lines (the others, endpoints_only, once per model)."""
        return [k for k, e in enumerate(self.cfg.eval_sets) if not e.endpoints_only]

    @contextmanager
    def writing(self):
        """What an executor runs in: the store's lease is given up at the end, whatever happens, and Ctrl-C
        becomes one line saying what is stored and how to resume."""
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {len(self.store.done_pairs())} of {len(self.pairs)} pairs are stored in "
                              f"{self.cfg.store}; rerun the same command to resume") from None
        finally:
            self.store.close()

    def missing_endpoints(self) -> list[int]:
        done = self.store.done_endpoints()
        return [i for i in range(len(self.names)) if i not in done]

    def gather_endpoints(self, computed) -> dict[int, list[np.ndarray]]:
        """Store each freshly computed (model, (metrics, per-example values or None)) as it arrives; read
        the others back from the store. The metrics file goes last: it marks the endpoint done."""
        ends = {}
        for i, (metrics, examples) in computed:
            if examples is not None:
                self.store.write_endpoint(i, endpoint_examples(self.names[i], self.names_of_sets, examples), examples=True)
            self.store.write_endpoint(i, endpoint_table(self.names[i], self.layout, metrics))
            ends[i] = metrics
        for i in range(len(self.names)):
            if i not in ends:
                ends[i] = metrics_from_endpoint(self.store.read_endpoint(i), self.layout)
        return ends

    @staticmethod
    def end_losses(ends: dict[int, list[np.ndarray]], i: int, j: int) -> tuple[float, float]:
        """Loss of each endpoint on the first eval set: what adaptive α refines by."""
        return float(ends[i][0][0, LOSS]), float(ends[j][0][0, LOSS])

    def record_pair(self, i: int, j: int, line: Line, ends: dict[int, list[np.ndarray]]) -> None:
        """Store one finished line; the curve file goes last: it marks the pair done."""
        on = self.on_line
        if line.examples is not None:
            sets = [self.names_of_sets[k] for k in on]
            self.store.write_pair(i, j, pair_examples(self.names[i], self.names[j], sets, line.examples), examples=True)
        curve = dict(line.interior)
        if 0.0 in self.cfg.alphas:
            curve[0.0] = [ends[i][k] for k in on]
        if 1.0 in self.cfg.alphas:
            curve[1.0] = [ends[j][k] for k in on]
        self.store.write_pair(i, j, pair_table(self.names[i], self.names[j], [self.layout[k] for k in on], curve,
                                               line.distance))


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _inspect_all(cfg: SweepConfig) -> list[sources.Found]:
    """Every model inspected; those that cannot be had are named together (a range such as cola_6ep_ft-{0..99}
    where only some seeds were published), in one line."""
    found, failed = [], []
    for m in cfg.models:
        try:
            found.append(sources.inspect(m.ref, cfg.cache_dir, cfg.storage_options))
        except ConfigError as e:
            failed.append((m.name, str(e)))
    if len(failed) == 1:
        raise ConfigError(failed[0][1])
    if failed:
        shown = ", ".join(name for name, _ in failed[:20]) + (", ..." if len(failed) > 20 else "")
        raise ConfigError(f"{len(failed)} of {len(cfg.models)} models cannot be had: {shown} (the first: {failed[0][1]})")
    return found


def here_on_gpus(cfg: SweepConfig) -> bool:
    """Whether this process would compute on a GPU (the in-process executor; ray_sweep asks the cluster)."""
    return pick_device(cfg.device).type == "cuda"


def prepare(cfg: SweepConfig, on_gpus: Callable[[SweepConfig], bool] = here_on_gpus) -> Plan:
    """Everything checked, from headers only: no model's weights are downloaded here (the actors fetch their own).
    `on_gpus` says where the sweep will run, which makes `dtype: auto` concrete; it is asked last, after every
    check, since asking a Ray cluster starts Ray."""
    store = Store(cfg.store, cfg.storage_options)
    found = _inspect_all(cfg)
    infos = [M.read_info(m.name, f.folder, m.labels, f.shapes) for m, f in zip(cfg.models, found)]
    labels = M.preflight(infos)
    if cfg.packing is True and infos[0].model_type not in PACKABLE:
        raise ConfigError(f"config: packing needs a BERT-family encoder ({', '.join(sorted(PACKABLE))}); the models "
                          f"are {infos[0].model_type!r} (set packing: auto)")
    source = cfg.tokenizer or cfg.models[0].ref
    try:
        tokenizer = load_tokenizer(sources.inspect(source, cfg.cache_dir, cfg.storage_options).folder if cfg.tokenizer
                                   else found[0].folder)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"tokenizer {source!r}: cannot load ({type(e).__name__})") from None
    datas = [prepare_data(e, tokenizer, labels, cfg.max_length, cfg.storage_options) for e in cfg.eval_sets]
    revisions = [f.revision for f in found]
    pairs = schedule.chosen_pairs([m.name for m in cfg.models], cfg.pairs)
    if cfg.dtype == "auto":
        cfg = dataclasses.replace(cfg, dtype=concrete_dtype(cfg.dtype, on_gpus(cfg)))
    store.open(cfg.fingerprint(), {m.name: r for m, r in zip(cfg.models, revisions)}, cfg.lease_timeout)
    done = store.done_pairs()
    pending = [p for p in pairs if p not in done]
    if done:
        log.info("store %s: %d pairs already stored, %d to compute", cfg.store, len(done), len(pending))
    return Plan(cfg, revisions, labels, datas, store, pairs, pending)
