"""The whole pipeline offline on the built-in task: sweep (Ray) → clusters → report, on a population shipped with
the package, so every machine sweeps the same models; with `retrain`, base → finetune (Ray Tune) first.

The shipped population (lmc_ray/demo_population/) is the 16 seeds this module's own finetuning made with the
default DemoConfig, every seed kept: `lmc-ray demo --retrain --workdir W` on the 2-core CPU machine, then
W/models/seed_k's config.json, model.safetensors and tokenizer files copied in. Finetuning is chaotic in
floating-point detail, so another machine's retrained seeds differ; the shipped ones do not.
Every stage is cached or resumable, so a second run only re-reads what the first one wrote.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from .analysis import findings, report
from .config import EvalSetSpec, ModelSpec, PlanesSpec, SweepConfig, grid
from .execution import plan, ray_sweep
from .storage.store import Store
from .training import finetune, pretrain, ray_finetune, toynli
from .training.finetune import FinetuneConfig


@dataclass
class DemoConfig:
    workdir: str = "results/demo"
    retrain: bool = False  # finetune the population here instead of sweeping the shipped one
    n_models: int = 16
    epochs: float = 7.0
    lr: float = 6e-4
    batch_size: int = 64
    swap_rate: float = 0.01  # of training's fully-overlapping hypotheses (toynli.py); docs/demo.md has others
    pretrain_steps: int = 3000  # word-matching pretraining of the shared start (pretrain.py; docs/demo.md)
    max_examples: int = 512
    cache_dir: str = "~/.cache/lmc_ray"
    # Basins during training: keep the models at these steps too and sweep each step (analysis/dynamics.py).
    save_steps: tuple[int, ...] = ()
    # Planes through a basin boundary, chosen by the analysis (findings.plane_triples), then swept and drawn.
    planes: int = 0


POPULATION = Path(__file__).parent / "demo_population"
SHIPPED = 16  # seeds in POPULATION


# What the paper's figures order the models by: the diagnostic's subject/object swaps, the word-order
# non-entailment subcase a bag-of-words model gets wrong (the demo's HANS lexical-overlap non-entailment).
OOD = "diagnostic/subcase=ln_subject/object_swap/accuracy"


def _spec(name: str, path: Path, **kw) -> EvalSetSpec:
    return EvalSetSpec(name=name, path=str(path), text=["premise", "hypothesis"], label="label", **kw)


def trains(d: DemoConfig) -> bool:
    """Whether `d` needs its own finetuning: the shipped population is the default settings' 16 seeds, at their
    final step only."""
    default = DemoConfig()
    same = all(getattr(d, k) == getattr(default, k) for k in ("epochs", "lr", "batch_size", "swap_rate",
                                                               "pretrain_steps", "save_steps"))
    return d.retrain or not same or d.n_models > SHIPPED


def configs(d: DemoConfig, base: Path | None, data: dict[str, Path]) -> tuple[FinetuneConfig | None, SweepConfig]:
    """The finetuning (None for the shipped population) and the sweep."""
    work = Path(d.workdir)
    val = _spec("validation", data["validation"], max_examples=d.max_examples)
    diag = _spec("diagnostic", data["diagnostic"], max_examples=d.max_examples, subsets=["subcase"], role="diagnostic")
    if base is None:
        ft = None
        models = [ModelSpec(f"pkg://lmc_ray/{POPULATION.name}/seed_{s}", f"seed_{s}") for s in range(d.n_models)]
    else:
        ft = FinetuneConfig(base=str(base), train=_spec("train", data["train"], max_examples=None),
                            eval_sets=[val, diag], labels=toynli.LABELS, output=str(work / "models"),
                            seeds=list(range(d.n_models)), epochs=d.epochs, lr=d.lr, batch_size=d.batch_size,
                            cache_dir=d.cache_dir, save_steps=list(d.save_steps))
        steps = [*d.save_steps, "final"] if d.save_steps else [None]
        models = [ModelSpec(finetune.model_url(ft, s, None if n == "final" else n),
                            f"seed_{s}@{n}" if n else f"seed_{s}", step=str(n) if n else None)
                  for s in ft.seeds for n in steps]
    sweep = SweepConfig(models=models, eval_sets=[val, diag], store=str(work / "store"), alphas=grid(10),
                        cache_dir=d.cache_dir, ood=OOD)
    return ft, sweep


def run(d: DemoConfig = DemoConfig()) -> dict[str, float]:
    # Absolute, as a YAML config's paths are made: the store records them, and a rerun must name the same files.
    d = replace(d, workdir=str(Path(d.workdir).resolve()))
    times = {}
    t = time.perf_counter()
    data = toynli.write(Path(d.workdir) / "data", swap_rate=d.swap_rate)
    base = None
    if trains(d):
        train = toynli.generate(swap_rate=d.swap_rate)["train"]
        base = pretrain.cached_base(list(zip(train.premise, train.hypothesis)),
                                    pretrain.PretrainConfig(steps=d.pretrain_steps), d.cache_dir)
        times["base"] = time.perf_counter() - t
    ft, sweep = configs(d, base, data)
    if ft is not None:
        t = time.perf_counter()
        ray_finetune.run(ft, str(Path(d.workdir) / "tune"))
        times["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    p = plan.prepare(sweep, ray_sweep.on_gpus)
    ray_sweep.run(p)
    times["sweep"] = time.perf_counter() - t

    t = time.perf_counter()
    store = Store(sweep.store)
    a = findings.run(store, "validation")
    findings.write(store, a)
    times["cluster"] = time.perf_counter() - t
    triples = findings.plane_triples(a, d.planes) if d.planes else []
    if triples:
        t = time.perf_counter()
        ray_sweep.run(plan.prepare(replace(sweep, planes=PlanesSpec(triples)), ray_sweep.on_gpus))
        times["planes"] = time.perf_counter() - t
    index = report.write(store, a)

    print(findings.text_summary(a))
    print(_table(a))
    print(f"Ray dashboard: {ray_sweep.dashboard()}")
    print(f"store:  {Path(sweep.store).resolve()}")
    print(f"report: {Path(index).resolve()}")
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    return times


def _table(a: findings.Analysis) -> str:
    """Models per cluster and their mean accuracy in-domain, on the diagnostic set and its non-entailment subcases."""
    keys = [k for k in a.per_model.columns if "subcase=ln_" in k or k.endswith("/all/accuracy")]
    g = a.per_model.groupby("cluster")
    rows = [f"{'cluster':>7} {'models':>6} " + " ".join(f"{k.split('=')[-1].replace('/accuracy', ''):>24}" for k in keys)]
    rows[0] += "   (mean accuracy)"
    for c, sub in g:
        rows.append(f"{c:>7} {len(sub):>6} " + " ".join(f"{sub[k].mean():>24.3f}" for k in keys))
    return "\n".join(rows)
