"""Everything decided before the first pair runs: models found and checked, data tokenized, the work listed.

Bad input is found here, in one pass, and reported as one line before any actor starts. A plan touches no
store: the Recorder (recorder.py) owns it. Both executors (in-process and Ray) take a plan's work items and
return typed results (compute/work.py).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..compute import adapters, models as M, packed, sources
from ..compute.core import concrete_dtype, pick_device
from ..compute.data import EvalData, prepare as prepare_data
from ..compute.packed import PACKABLE
from ..compute.work import Endpoint, Pair, Plane
from ..config import ModelSpec, SweepConfig, on_line, validate
from ..config.refs import hub_id
from ..errors import ConfigError
from . import schedule

log = logging.getLogger("lmc_ray")


@dataclass
class Plan:
    cfg: SweepConfig  # with dtype made concrete
    revisions: list[str]  # each model's pinned weights (sources.inspect); actors load exactly these
    labels: list[str]  # canonical label order
    heads: list[list[str]]  # each model's classes in its own output order (its config.json id2label)
    datas: list[EvalData]
    pairs: list[Pair]  # the pairs that get a line (config `pairs`)
    planes: list[Plane]  # the planes through three models (config `planes`)
    base_revision: str | None = None  # LoRA adapters: their base's pinned weights (cfg.base is its reference)

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


def _listed(cfg: SweepConfig) -> tuple[SweepConfig, set[str]]:
    """The config with its hub listings made models, each pinned to the commit the listing names and named by its
    repository id; and those names. A listing adds what the config does not already name."""
    if not cfg.listings:
        return cfg, set()
    bases = {x.adapters_of for x in cfg.listings if x.adapters_of}
    if len(bases) > 1:
        raise ConfigError(f"config: models: adapters of {' and '.join(map(repr, sorted(bases)))}: a sweep's adapters "
                          "share one base")
    named = {m.name for m in cfg.models} | {m.ref.partition("@")[0] for m in cfg.models}
    added: list[ModelSpec] = []
    for x in cfg.listings:
        rows = [r for r in sources.hub_listing(x.base, x.relation, x.sort, x.limit + len(x.exclude))
                if r[0] not in x.exclude][:x.limit]
        if not rows:
            raise ConfigError(f"config: models: {x.key} {x.base!r}: the hub lists no {x.relation}s of it")
        for repo, sha in rows:
            if not hub_id(repo) or "@" in repo:  # a listing is the hub's word, not the user's: nothing else is fetched
                log.warning("the hub listed %r as a %s of %s, which is no repository id; left out", repo, x.relation,
                            x.base)
            elif repo not in named:
                named.add(repo)
                added.append(ModelSpec(f"{repo}@{sha}" if sha else repo, repo))
        log.info("%s %s: %d models listed on the hub", x.key, x.base, len(rows))
    base = cfg.base or (bases.pop() if bases else None)
    return dataclasses.replace(cfg, models=[*cfg.models, *added], listings=[], base=base), {m.name for m in added}


def _sweepable(cfg: SweepConfig, found: list[sources.Found], listed: set[str],
               check: Callable[[ModelSpec, sources.Found], None]) -> tuple[SweepConfig, list[sources.Found]]:
    """The models `check` accepts. One it refuses is refused in one line when the config names it, and left out
    with a warning when a hub listing brought it: what the hub holds is not the user's mistake."""
    keep = []
    for m, f in zip(cfg.models, found):
        try:
            check(m, f)
            keep.append((m, f))
        except ConfigError as e:
            if m.name not in listed:
                raise
            log.warning("%s; left out of the sweep", e)
    return _fewer(cfg, [m for m, _ in keep]), [f for _, f in keep]


def _fewer(cfg: SweepConfig, kept: list[ModelSpec]) -> SweepConfig:
    if len(kept) < 2 <= len(cfg.models):
        raise ConfigError(f"config: {len(cfg.models) - len(kept)} of {len(cfg.models)} models left out (named above), "
                          f"{len(kept)} left: a sweep needs at least 2")
    return dataclasses.replace(cfg, models=kept)


def _inspect_all(cfg: SweepConfig, listed: set[str]) -> tuple[SweepConfig, list[sources.Found]]:
    """Every model inspected; those that cannot be had are named together (a range such as cola_6ep_ft-{0..99}
    where only some seeds were published), in one line. Listed ones that cannot be had are left out."""
    found, failed, kept = [], [], []
    for m in cfg.models:
        try:
            found.append(sources.inspect(m.ref, cfg.cache_dir, cfg.storage_options))
            kept.append(m)
        except ConfigError as e:
            if m.name in listed:
                log.warning("%s; left out of the sweep", e)
            else:
                failed.append((m.name, str(e)))
    if len(failed) == 1:
        raise ConfigError(failed[0][1])
    if failed:
        shown = ", ".join(name for name, _ in failed[:20]) + (", ..." if len(failed) > 20 else "")
        raise ConfigError(f"{len(failed)} of {len(cfg.models)} models cannot be had: {shown} (the first: {failed[0][1]})")
    return _fewer(cfg, kept), found


def here_on_gpus(cfg: SweepConfig) -> bool:
    """Whether this process would compute on a GPU (the in-process executor; ray_sweep asks the cluster)."""
    return pick_device(cfg.device).type == "cuda"


def prepare(cfg: SweepConfig, on_gpus: Callable[[SweepConfig], bool] = here_on_gpus) -> Plan:
    """Everything checked, from headers only: no model's weights are downloaded here (the actors fetch their own).
    `on_gpus` says where the sweep will run, which makes `dtype: auto` concrete; it is asked last, after every
    check, since asking a Ray cluster starts Ray."""
    cfg, listed = _listed(cfg)
    cfg, found = _inspect_all(cfg, listed)
    base = None
    if cfg.base is not None or any(adapters.is_adapter(f.folder) for f in found):
        if listed:
            cfg, found = _sweepable(cfg, found, listed, _plain_lora)
        cfg, base = _adapters(cfg, found)
        infos = [M.read_info(f"base {cfg.base}", base.folder, None, base.shapes)]
        cfg, found = _sweepable(cfg, found, listed,
                                lambda m, f: adapters.inspect(m.name, f.folder, infos[0].shapes, f.shapes))
    else:
        if listed:  # a listed finetune must read, and match the first model the config names (or the hub lists)
            first = M.read_info(cfg.models[0].name, found[0].folder, cfg.models[0].labels, found[0].shapes)
            cfg, found = _sweepable(cfg, found, listed, lambda m, f: M.preflight(
                [first, M.read_info(m.name, f.folder, m.labels, f.shapes)]))
        infos = [M.read_info(m.name, f.folder, m.labels, f.shapes) for m, f in zip(cfg.models, found)]
    if listed:
        validate(cfg)  # the names the listing added: at least two models, anchors and planes that name them
    labels = M.preflight(infos)
    causal = infos[0].kind == M.CAUSAL_LM
    truncate = not (causal and cfg.max_length == "auto")  # an LM's text is cut only where the config says so
    cfg = dataclasses.replace(cfg, max_length=M.max_length(cfg.max_length, infos))  # concrete before the store opens
    if cfg.packing is True and infos[0].model_type not in PACKABLE:
        raise packed.refusal(infos[0].model_type)
    if causal:
        _check_text_sets(cfg)
    source = cfg.tokenizer or cfg.models[0].ref
    try:
        tokenizer = load_tokenizer(_tokenizer_folder(cfg, found[0].folder, base))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"tokenizer {source!r}: cannot load ({type(e).__name__})") from None
    datas = [prepare_data(e, tokenizer, labels, cfg.max_length, cfg.storage_options, truncate) for e in cfg.eval_sets]
    steps = [m.step for m in cfg.models]
    pairs = [Pair(a, b) for a, b in schedule.chosen_pairs([m.name for m in cfg.models], cfg.pairs)
             if cfg.across_steps or steps[a] == steps[b]]  # a population at several steps: lines within each
    if cfg.dtype in ("auto", "tfloat32"):
        cfg = dataclasses.replace(cfg, dtype=concrete_dtype(cfg.dtype, on_gpus(cfg)))
    index = {m.name: i for i, m in enumerate(cfg.models)}
    planes = [Plane(*(index[n] for n in t)) for t in (cfg.planes.triples if cfg.planes else [])]
    heads = [i.labels for i in infos] if base is None else [labels] * len(found)
    return Plan(cfg, [f.revision for f in found], labels, heads, datas, pairs, planes,
                base.revision if base else None)


def _adapters(cfg: SweepConfig, found: list[sources.Found]) -> tuple[SweepConfig, sources.Found]:
    """A population of LoRA adapters: all of them adapters, of one base, which can be had. Returns the config with
    `base` made concrete, and the base inspected."""
    kinds = [adapters.is_adapter(f.folder) for f in found]
    names = [m.name for m in cfg.models]
    if not any(kinds):
        raise ConfigError(f"config: base {cfg.base!r} is for populations of LoRA adapters; model {names[0]!r} is a "
                          "full checkpoint")
    if not all(kinds):
        full, lora = names[kinds.index(False)], names[kinds.index(True)]
        raise ConfigError(f"model {full!r} is a full checkpoint and {lora!r} a LoRA adapter: a sweep's models are all "
                          "full checkpoints or all adapters of one base")
    named = [adapters.read_config(n, f.folder).get("base_model_name_or_path") for n, f in zip(names, found)]
    if cfg.base is None:
        if None in named:
            raise ConfigError(f"model {names[named.index(None)]!r}: its {adapters.CONFIG} names no "
                              "base_model_name_or_path; set base in the config")
        other = next((k for k, b in enumerate(named) if b != named[0]), None)
        if other is not None:
            raise ConfigError(f"models {names[0]!r} and {names[other]!r} are adapters of different bases "
                              f"({named[0]!r}, {named[other]!r}): a sweep's adapters share one base (set base to "
                              "choose it)")
        cfg = dataclasses.replace(cfg, base=named[0])
    try:
        base = sources.inspect(cfg.base, cfg.cache_dir, cfg.storage_options)
    except ConfigError as e:
        raise ConfigError(f"model {names[0]!r}: its base {cfg.base!r} cannot be had ({e})") from None
    if adapters.is_adapter(base.folder):
        raise ConfigError(f"config: base {cfg.base!r} is itself an adapter; name the full model it adapts")
    return cfg, base


def _plain_lora(m: ModelSpec, f: sources.Found) -> None:
    if not adapters.is_adapter(f.folder):
        raise ConfigError(f"model {m.name!r}: listed as an adapter but is a full checkpoint")
    adapters.read_config(m.name, f.folder)


def _check_text_sets(cfg: SweepConfig) -> None:
    """What causal LMs cannot report on a text set, refused before anything is read."""
    for e in cfg.eval_sets:
        other = [m for m in e.metrics if m != "accuracy"]
        if other and (e.label is None or e.choices is not None):
            kind = "a text set reports loss and accuracy (next token)" if e.choices is None else \
                "a multiple-choice set reports loss and accuracy (of its items)"
            raise ConfigError(f"eval set {e.name!r}: {other[0]} is a classification score; {kind}")
    if cfg.per_example:
        raise ConfigError("config: per_example: bootstrap intervals resample a classifier's examples; a causal LM's "
                          "loss is token-weighted (set per_example false)")


def _tokenizer_folder(cfg: SweepConfig, first: Path, base: sources.Found | None) -> Path:
    """The config's tokenizer, else the first model's; an adapter without tokenizer files uses its base's."""
    if cfg.tokenizer:
        return sources.inspect(cfg.tokenizer, cfg.cache_dir, cfg.storage_options).folder
    if base is not None and not (first / "tokenizer_config.json").is_file():
        return base.folder
    return first
