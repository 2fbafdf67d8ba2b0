"""Everything decided before the first pair runs: models found and checked, data tokenized, the work listed.

Bad input is found here, in one pass, and reported as one line before any actor starts. A plan touches no
store: the Recorder (recorder.py) owns it. Both executors (in-process and Ray) take a plan's work items and
return typed results (compute/work.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..compute import models as M, packed, sources
from ..compute.core import concrete_dtype, pick_device
from ..compute.data import EvalData, prepare as prepare_data
from ..compute.packed import PACKABLE
from ..compute.work import Endpoint, Pair, Plane
from ..config import SweepConfig, on_line
from ..errors import ConfigError
from . import schedule


@dataclass
class Plan:
    cfg: SweepConfig  # with dtype made concrete
    revisions: list[str]  # each model's pinned weights (sources.inspect); actors load exactly these
    labels: list[str]  # canonical label order
    heads: list[list[str]]  # each model's classes in its own output order (its config.json id2label)
    datas: list[EvalData]
    pairs: list[Pair]  # the pairs that get a line (config `pairs`)
    planes: list[Plane]  # the planes through three models (config `planes`)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.cfg.models]

    @property
    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(i) for i in range(len(self.cfg.models))]

    @property
    def on_line(self) -> list[int]:
        return on_line(self.cfg.eval_sets)


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
    found = _inspect_all(cfg)
    infos = [M.read_info(m.name, f.folder, m.labels, f.shapes) for m, f in zip(cfg.models, found)]
    labels = M.preflight(infos)
    cfg = dataclasses.replace(cfg, max_length=M.max_length(cfg.max_length, infos))  # concrete before the store opens
    if cfg.packing is True and infos[0].model_type not in PACKABLE:
        raise packed.refusal(infos[0].model_type)
    source = cfg.tokenizer or cfg.models[0].ref
    try:
        tokenizer = load_tokenizer(sources.inspect(source, cfg.cache_dir, cfg.storage_options).folder if cfg.tokenizer
                                   else found[0].folder)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"tokenizer {source!r}: cannot load ({type(e).__name__})") from None
    datas = [prepare_data(e, tokenizer, labels, cfg.max_length, cfg.storage_options) for e in cfg.eval_sets]
    steps = [m.step for m in cfg.models]
    pairs = [Pair(a, b) for a, b in schedule.chosen_pairs([m.name for m in cfg.models], cfg.pairs)
             if cfg.across_steps or steps[a] == steps[b]]  # a population at several steps: lines within each
    if cfg.dtype in ("auto", "tfloat32"):
        cfg = dataclasses.replace(cfg, dtype=concrete_dtype(cfg.dtype, on_gpus(cfg)))
    index = {m.name: i for i, m in enumerate(cfg.models)}
    planes = [Plane(*(index[n] for n in t)) for t in (cfg.planes.triples if cfg.planes else [])]
    return Plan(cfg, [f.revision for f in found], labels, [i.labels for i in infos], datas, pairs, planes)
