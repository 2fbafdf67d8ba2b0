"""The command line: `lmc-ray sweep | analyse | finetune | export | demo | configs`, and the one-line error contract.

`jobs/*.py` are aliases of these commands, so `ray submit cluster.yaml jobs/sweep.py -- --config mnli` keeps
working from a checkout.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import re
import sys
import textwrap

from .errors import ConfigError, Interrupted, SweepError

log = logging.getLogger("lmc_ray")


def main(fn, argv=None) -> None:
    """Run fn(argv); bad input becomes one line on stderr and exit code 2, a failed sweep or a full disk exit
    code 1, Ctrl-C one line and 130."""
    if not log.handlers:  # our logger only: the root logger would turn on every HTTP request of the hub client
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        fn(argv)
    except ConfigError as e:
        print(f"lmc-ray: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"lmc-ray: {e}", file=sys.stderr)
        sys.exit(130)
    except SweepError as e:
        advice = "" if "rerun" in str(e) else " (rerun the same command to resume)"  # said once
        print(f"lmc-ray: sweep failed: {e}{advice}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before the store was opened: nothing was written
        print("lmc-ray: interrupted before any result was stored", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every store write is atomic and a partial one is removed, so what is stored stays valid.
        print(f"lmc-ray: no space left on the device of {e.filename or 'a file being written'}: what was "
              "written before is intact; free space and rerun the same command to resume", file=sys.stderr)
        sys.exit(1)


def sweep(argv=None) -> None:
    """Sweep every pair of models along the straight line between them; results stream into a Parquet store."""
    from . import config, sweep as run

    parser = config.parser(sweep.__doc__.splitlines()[0] + " (without --config: `lmc-ray demo`)")
    parser.add_argument("--executor", choices=("ray", "local"), default="ray",
                        help="ray: actors on the Ray cluster this job joins or starts; local: in this process, "
                             "without Ray (small runs, debugging)")
    args = parser.parse_args(argv)
    if not args.config:
        demo([])
        return
    print(f"store: {run(config.load(args), executor=args.executor).url}")


def analyse(argv=None) -> None:
    """Barriers, basins and generalization from a finished sweep store; writes STORE/report/index.html."""
    from .analysis import findings, report
    from .storage.store import Store

    p = argparse.ArgumentParser(description=analyse.__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="the sweep's store (local path or s3://)")
    p.add_argument("--eval-set", help="eval set whose barriers define the clusters (default: the first)")
    p.add_argument("--metric", default="loss", help="loss or error")
    p.add_argument("--bootstrap", type=int, help="resamples per barrier interval (default 1000 when the sweep kept "
                                                 "per-example losses, else none; 0 = none)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--ood", metavar="KEY", help="per-model score the basins are tested on and the paper's figures "
                   "ordered by, e.g. 'hans_full/heuristic,label=lexical_overlap,non-entailment/accuracy' (default: "
                   "the sweep config's `ood`, else the first diagnostic set's whole-set score, endpoints_only sets "
                   "first)")
    p.add_argument("--scores", metavar="FILE", help="per-model results from elsewhere (CSV/Parquet: a model column, "
                                                     "then numeric columns), joined to the clusters")
    p.add_argument("--out", metavar="DIR", help="write the tables and report/ here (local or s3://) instead of "
                                                 "into the store, e.g. for a read-only store")
    args = p.parse_args(argv)
    store = Store(args.store)
    store.meta()  # not a store: say so before anything is created at --out
    out = Store(args.out) if args.out else store
    out.check_writable("" if args.out else "; write the analysis elsewhere with --out DIR")
    try:
        try:
            a = findings.run(store, args.eval_set, args.metric, args.bootstrap, args.level, args.scores, args.ood)
        except findings.BarriersOnly as e:
            findings.write(out, e)
            print(f"{e} (in {out.url})")
            return
        findings.write(out, a)
        index = report.write(store, a, out)
    finally:
        out.close()
    print(findings.text_summary(a))
    print(f"report: {index}")


def finetune(argv=None) -> None:
    """Finetune N copies of one base model on Ray Tune (one trial per seed); resumable."""
    import yaml

    from .training import finetune as ft
    from .training import ray_finetune
    from .config import find

    p = argparse.ArgumentParser(description=finetune.__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML (or a shipped one, e.g. finetune_cola_minilm): base, train, "
                                                   "eval_sets, labels, output, seeds, ...")
    p.add_argument("--experiment-dir", default="results/tune", help="where Ray Tune keeps its state (for resume)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", default="auto", type=lambda v: v if v == "auto" else float(v),
                   help="GPUs each trial asks Ray for, e.g. 0.5 for two trials per GPU (default auto: 1 when the "
                        "cluster has GPUs or its autoscaler may start some, else 0)")
    args = p.parse_args(argv)
    path = find(args.config)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"finetune config: cannot read {args.config!r} ({type(e).__name__})") from None
    cfg = ft.from_dict(raw)
    for url in ray_finetune.run(cfg, args.experiment_dir, cpus_per_trial=args.cpus_per_trial,
                                gpus_per_trial=args.gpus_per_trial):
        print(url)


def export(argv=None) -> None:
    """A point of a stored line as a model: θ(α) between two of the store's models, as an HF checkpoint."""
    from .analysis.export import export as write
    from .storage.store import Store

    p = argparse.ArgumentParser(description=export.__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="the sweep's store (local path or s3://)")
    p.add_argument("--pair", nargs=2, required=True, metavar=("A", "B"), help="the two models, by their store names")
    p.add_argument("--alpha", type=float, required=True, help="the weight of B (0 = A, 1 = B)")
    p.add_argument("--out", required=True, help="folder for the checkpoint (model + tokenizer; with --adapter, adapter + tokenizer)")
    p.add_argument("--cache-dir", default="~/.cache/lmc_ray", help="where remote models are cached")
    p.add_argument("--adapter", action="store_true",
                   help="of LoRA adapters: write the point as one adapter of their base (rank up to r_A + r_B, exact) "
                        "instead of the merged checkpoint")
    args = p.parse_args(argv)
    folder = write(Store(args.store), *args.pair, args.alpha, args.out, args.cache_dir, as_adapter=args.adapter)
    print(f"exported: {folder}")


def demo(argv=None) -> None:
    """The whole pipeline offline on the built-in task: sweep the shipped population, cluster, report."""
    from . import demo as d

    p = argparse.ArgumentParser(description=demo.__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=d.DemoConfig.n_models,
                   help=f"how many seeds (the shipped population has {d.SHIPPED}; more are finetuned here)")
    p.add_argument("--retrain", action="store_true",
                   help="pretrain the start and finetune the seeds here, on Ray Tune, instead of sweeping the shipped "
                        "population (minutes; another machine's seeds differ from the shipped ones)")
    p.add_argument("--workdir", help=f"models, store and report go here (default: {d.DemoConfig.workdir}, or "
                                     f"{d.DemoConfig.workdir}-trained for a population finetuned here)")
    p.add_argument("--steps", type=int, nargs="+", default=[], metavar="N",
                   help="also keep each model at these training steps and follow the basins across them "
                        "(finetunes here)")
    p.add_argument("--planes", type=int, default=0, metavar="K",
                   help="K planes through a basin boundary, chosen by `analyse`, swept and drawn")
    args = p.parse_args(argv)
    cfg = d.DemoConfig(n_models=args.models, retrain=args.retrain, save_steps=tuple(args.steps), planes=args.planes)
    # A population finetuned here differs from the shipped one: its own store, not a refused resume of the other.
    default = d.DemoConfig.workdir + ("-trained" if d.trains(cfg) else "")
    d.run(dataclasses.replace(cfg, workdir=args.workdir or default))


def configs(argv=None) -> None:
    """The configurations that ship with the package (give one to --config or --overlay by its name)."""
    import json

    from .config import CONFIGS, schema, shipped

    p = argparse.ArgumentParser(description=configs.__doc__)
    show = p.add_mutually_exclusive_group()
    show.add_argument("--schema", action="store_true", help="print the JSON schema of a sweep YAML (for editors) instead")
    show.add_argument("--reference", action="store_true",
                      help="print the configuration reference (Markdown: every setting, its type, default and meaning)")
    args = p.parse_args(argv)
    if args.schema:
        print(json.dumps(schema(), indent=1))
        return
    if args.reference:
        print(reference(), end="")
        return
    for name in shipped():
        print(textwrap.fill(_summary((CONFIGS / f"{name}.yaml").read_text()), 110, initial_indent=f"{name:24} ",
                            subsequent_indent=" " * 25, break_on_hyphens=False))


def reference() -> str:
    """docs/configuration.md: the sweep's settings and the finetuning job's, from their classes."""
    from .config import markdown
    from .training.finetune import FinetuneConfig, LoraSpec

    return markdown(((f"Finetuning (`{FinetuneConfig.__name__}`)", FinetuneConfig,
                      "The YAML of `lmc-ray finetune --config FILE`: one model per seed from one pretrained start. "
                      "`train` and `eval_sets` are eval-set entries as above."),
                     (f"A LoRA adapter (`lora:`, `{LoraSpec.__name__}`)", LoraSpec,
                      "With `lora:`, each seed trains a PEFT adapter of a causal-LM base instead of every weight "
                      "(docs/lm-example.md).")))


def _summary(text: str) -> str:
    """The first sentence of a YAML file's leading comment, whole (it may span several comment lines)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    words = " ".join(lines)
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", words)
    return words[:end.end()].strip() if end else words


# "cluster" is the Ray cluster everywhere else; the basins job keeps that name only as an alias of `analyse`.
COMMANDS = {"sweep": sweep, "analyse": analyse, "finetune": finetune, "export": export, "demo": demo,
            "configs": configs}
ALIASES = {"cluster": "analyse"}


def entry(argv=None) -> None:
    """`lmc-ray COMMAND ...`"""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        from importlib.metadata import version

        print(f"lmc-ray {version('lmc-ray')}")
        return
    if argv and argv[0] in ALIASES:
        argv = [ALIASES[argv[0]], *argv[1:]]
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:9} {fn.__doc__.splitlines()[0]}" for name, fn in COMMANDS.items())
        print(f"usage: lmc-ray COMMAND [options]   (lmc-ray COMMAND --help; lmc-ray --version)\n\n{lines}",
              file=sys.stderr if argv else sys.stdout)
        sys.exit(2 if argv and argv[0] not in ("-h", "--help") else 0)
    sys.argv[0] = f"lmc-ray {argv[0]}"  # what argparse names in usage lines and errors: `lmc-ray sweep`, not `lmc-ray`
    main(COMMANDS[argv[0]], argv[1:])
