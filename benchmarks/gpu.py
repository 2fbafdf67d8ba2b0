"""The GPU check: the compute core on one GPU (no Ray), one row per technique, against the paper's procedure, in one run.

    python benchmarks/gpu.py [--data-dir ../shared/data] [--layers 12 --hidden 768 --heads 12] [--budget 200]

Models: N BERT classifiers built from a config (random weights plus a seeded perturbation each: nothing can
be downloaded there), with a WordPiece vocabulary built from the MNLI text. Data: the first 512 MNLI
dev_matched examples and 512 HANS examples balanced over its 30 subcases, as configs/mnli.yaml reads them, and
all 30,000 HANS rows as its endpoints-only hans_full. It prints, measured in this one run, each line flushed as
it is measured (a run cut short keeps what it did):
  versions   Python, torch, CUDA, transformers, the GPU
  ceiling    an 8192³ bf16 matmul (torch.matmul), TFLOP/s
  paper      the paper's procedure on the same GPU (checkpoints reloaded, state dict rebuilt on the CPU per α,
             every input padded to 512, batch 512, fp32), per α over --paper-alphas of them
  techniques one row each: the core's whole line for one pair (lerp in place, both eval sets, metrics counted
             on the device, one host copy), as ms per α; the fraction of processed tokens that are real;
             the encoder's useful TFLOP/s and its fraction of the ceiling; the projected full MNLI sweep
             (4,950 pairs × 8 interior α + 100 endpoints); the largest loss difference from the fp32 row;
             how many of its CUDA graphs recorded (and why not); the compiles each eval set caused
  paper shape the MNLI config's sets through one core: 512 + 512 on a line, then all 30,000 HANS rows at one
             endpoint (its streams, compiles, seconds and peak GPU memory: the dense fallback would not fit)
  sweep      a whole N-model sweep through local.run with the config's defaults (dtype, packing: auto)
Rows that would not leave the paper shape and the sweep their time within --budget seconds say so instead of
running. On a CPU (toy size, tests/test_benchmarks.py) run it with --layers 2 --hidden 64 --heads 2 --examples
32 --full-hans 2000: rows that need CUDA say so; --cpu-compiler inductor compiles the packed rows as on a GPU.
"""
from __future__ import annotations

import argparse
import functools
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.compute.core import Core
from lmc_ray.compute.metrics import LOSS
from lmc_ray.compute.models import quiet
from lmc_ray.errors import first_line
from lmc_ray.testing.machine import machine
from lmc_ray.testing.population import make_population

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["entailment", "neutral", "contradiction"]
print = functools.partial(print, flush=True)  # noqa: A001  every line out as soon as it is measured


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> float:
    fn()  # warm-up: kernels chosen, caches filled
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def ceiling(device) -> float:
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n ** 3 / timed(lambda: a @ b, device, 20 if device.type == "cuda" else 1) / 1e12


def versions(device) -> str:
    import transformers

    gpu = "no GPU"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        gpu = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}), driver CUDA {torch.version.cuda}"
    return (f"versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}; {gpu}")


def compiles() -> int:
    """Graphs dynamo has compiled in this process (one per new shape of a compiled function)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def encoder_flops(lengths: list[int], layers: int, hidden: int, ffn: int) -> float:
    """Multiply-adds × 2 of the encoder on the real (non-padding) tokens: projections, feed-forward and
    attention scores; the last layer as the core runs it (position 0 only past the keys and values)."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    total = 0.0
    for n in lengths:
        full = per_token * n + 4 * n * n * hidden  # QKᵀ and attention · V
        last = 2 * 2 * hidden * hidden * n + (per_token + 4 * n * hidden)  # K, V for all; the rest for one
        total += full * (layers - 1) + last
    return total


def paper_pair(paths, texts: list[tuple[list, list]], labels: list[list], device, alphas) -> float:
    """The paper's per-pair procedure, timed over `alphas` (the curve itself is not needed here)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(paths[0])
    sa = AutoModelForSequenceClassification.from_pretrained(paths[0]).state_dict()
    sb = AutoModelForSequenceClassification.from_pretrained(paths[1]).state_dict()
    model = AutoModelForSequenceClassification.from_pretrained(paths[0]).to(device).eval()
    for alpha in alphas:
        model.load_state_dict({k: (1 - alpha) * sa[k] + alpha * sb[k] if sa[k].is_floating_point() else sa[k]
                               for k in sa})
        for (a_texts, b_texts), y in zip(texts, labels):  # each eval set
            with torch.no_grad():
                for s in range(0, len(y), 512):
                    enc = tok(a_texts[s: s + 512], b_texts[s: s + 512], truncation=True, max_length=512,
                              padding="max_length", return_tensors="pt").to(device)
                    model(**enc).logits.float().cpu()
    sync(device)
    return time.perf_counter() - t


# (row, dtype, packing, CUDA graphs, Core's packed levers). The fp32 row is every other row's reference; the
# second is what auto picks on a GPU, measured early so that a short budget still has it; the rest each take
# one thing away from it or add a lever. The TF32 row's |Δ loss| against fp32 is TF32's error on a real GPU.
TECHNIQUES = [
    ("fp32, padded batches (reference)", "float32", False, False, {}),
    ("bf16, packed, fused QKV + graphs (auto)", "bfloat16", True, True, {}),
    ("tf32 matmuls, padded batches", "tfloat32", False, False, {}),
    ("bf16, padded batches", "bfloat16", False, False, {}),
    ("bf16, padded + CUDA graphs", "bfloat16", False, True, {}),
    ("bf16, packed, separate QKV", "bfloat16", True, False, {"fused_qkv": False}),
    ("bf16, packed, fused QKV", "bfloat16", True, False, {}),
    ("bf16, packed, whole forward compiled", "bfloat16", True, False, {"compile_whole": True}),  # vs the row above
]
FULL_PAIRS, FULL_MODELS = 4950, 100
FULL_POINTS = FULL_PAIRS * 8 + FULL_MODELS  # every pair's interior α, and each model alone once
RESERVE = 45  # seconds kept for the paper shape and the sweep


def technique(paths, datas, device, dtype, packing, graphs, levers, batch_tokens, repeat):
    """(seconds per α, interior losses per set, processed tokens per α, core, compiles per set) for one line."""
    from transformers import AutoModelForSequenceClassification

    template = AutoModelForSequenceClassification.from_pretrained(paths[0])
    torch._dynamo.reset()  # each row compiles what it needs itself, as a fresh actor would (and counts it)
    core = Core(template, datas, device, dtype, batch_tokens, 512, packing=packing, graphs=graphs, **levers)
    wa, wb = (core.resident(AutoModelForSequenceClassification.from_pretrained(x).state_dict()) for x in paths[:2])
    per_set = {}
    core.working.set(wa, wb, 0.5)
    for ev in core.evaluators:  # first call: compiles and CUDA graph recording, counted per set
        before = compiles()
        ev.summary()
        sync(device)
        per_set[ev.data.name] = compiles() - before
    line = lambda: core.curve(wa, wb, config.grid(10), 0, (0.0, 0.0))  # noqa: E731
    seconds = timed(line, device, repeat) / 8
    losses = np.array([[m[0, LOSS] for m in ms] for _, ms in sorted(line().interior.items())])
    processed = sum(b["input_ids"].numel() for ev in core.evaluators for b in ev.batches)
    return seconds, losses, processed, core, per_set


def graphs_recorded(core) -> tuple[str, list[str]]:
    replays = [ev.summary for ev in core.evaluators if hasattr(ev.summary, "graph")]
    if not replays:
        return "-", []
    failures = [f"{ev.data.name}: {ev.summary.failure}" for ev in core.evaluators if getattr(ev.summary, "failure", None)]
    return f"{sum(bool(r.graph) for r in replays)}/{len(replays)}", failures


def paper_shape(paths, datas, device, flops_of) -> None:
    """The MNLI config's sets in one core as a sweep's actor holds them: a line on the two line sets, then every
    HANS row at one endpoint. Peak GPU memory says whether the dense fallback was taken (~51 GB a stream)."""
    from transformers import AutoModelForSequenceClassification

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch._dynamo.reset()
    t = time.perf_counter()
    before = compiles()
    core = Core(AutoModelForSequenceClassification.from_pretrained(paths[0]), datas, device, "auto",
                on_line=[0, 1], packing="auto")
    wa, wb = (core.resident(AutoModelForSequenceClassification.from_pretrained(x).state_dict()) for x in paths[:2])
    core.curve(wa, wb, config.grid(10), 0, (0.0, 0.0))
    sync(device)
    on_line = time.perf_counter() - t
    mid = compiles()
    t = time.perf_counter()
    metrics, _ = core.endpoint(wa, sets=(2,))
    sync(device)
    full = core.evaluators[2]
    processed = sum(b["input_ids"].numel() for b in full.batches)
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB peak GPU memory" if device.type == "cuda" else "CPU"
    print(f"paper shape: {core.dtype}, packing {core.packing}; line on {datas[0].name} {len(datas[0])} + "
          f"{datas[1].name} {len(datas[1])} in {on_line:.1f} s ({mid - before} compiles, first use included); "
          f"{full.data.name} {len(full.data)} rows endpoints-only in {len(full.batches)} streams "
          f"({full.data.n_tokens / processed:.0%} real tokens), {compiles() - mid} more compiles, "
          f"{time.perf_counter() - t:.1f} s, {flops_of([full.data]) / 1e12:.1f} TFLOP; {peak}; "
          f"loss {metrics[0][0, LOSS]:.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--full-hans", type=int, default=None, help="rows of the endpoints-only HANS set (default: all)")
    p.add_argument("--batch-tokens", default="auto", help="tokens per batch (padded) or stream (packed)")
    p.add_argument("--repeat", type=int, default=5, help="timed lines per technique")
    p.add_argument("--paper-alphas", type=int, default=3, help="α the paper's procedure is timed over")
    p.add_argument("--budget", type=float, default=200, help="seconds from the start; later rows skip past it")
    p.add_argument("--cpu-compiler", default=None, help="on a CPU, compile the packed rows with this torch.compile "
                   "backend (inductor: as on a GPU); default: eager FlexAttention, the core's choice there")
    args = p.parse_args()
    start = time.monotonic()
    batch_tokens = args.batch_tokens if args.batch_tokens == "auto" else int(args.batch_tokens)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quiet()
    print(versions(device))
    print(machine())
    data = Path(args.data_dir)
    mnli_path, hans_path = data / "mnli" / "dev_matched.tsv", data / "hans" / "heuristics_evaluation_set.regenerated.tsv"
    mnli = pd.read_csv(mnli_path, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-gpu-"))
    top = ceiling(device)
    print(f"ceiling: {'8192³ bf16' if device.type == 'cuda' else '2048³ fp32'} matmul {top:.2f} TFLOP/s")

    t = time.perf_counter()
    paths = make_population(work / "pop", args.models, list(mnli.premise) + list(mnli.hypothesis), LABELS,
                            layers=args.layers, hidden=args.hidden, heads=args.heads, noise=0.01, vocab_size=30522)
    print(f"population: {args.models} BERTs ({args.layers} layers, hidden {args.hidden}) built in {time.perf_counter() - t:.0f} s")
    hans = {"path": str(hans_path), "text": ["sentence1", "sentence2"], "label": "gold_label",
            "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]}}
    sets = [{"name": "mnli", "path": str(mnli_path), "text": ["premise", "hypothesis"], "label": "gold_label",
             "max_examples": args.examples},
            {"name": "hans", **hans, "balance_by": "subcase", "max_examples": args.examples}]
    full_hans = {"name": "hans_full", **hans, "endpoints_only": True, "max_examples": args.full_hans}
    base = {"models": [str(x) for x in paths], "alphas": 10, "device": device.type, "cache_dir": str(work / "c")}
    cfg = config.from_dict({**base, "store": str(work / "store"), "eval_sets": sets})
    pl = plan.prepare(cfg)
    from transformers import AutoConfig

    arch = AutoConfig.from_pretrained(paths[0])

    def flops_of(datas):
        lengths = [len(x) for d in datas for x in d.input_ids]
        return encoder_flops(lengths, arch.num_hidden_layers, arch.hidden_size, arch.intermediate_size)

    lengths = [len(x) for d in pl.datas for x in d.input_ids]
    flops = flops_of(pl.datas)
    print(f"eval sets: {', '.join(f'{d.name} {len(d)} examples' for d in pl.datas)}; {sum(lengths):,} real tokens, "
          f"{flops / 1e12:.2f} TFLOP of useful encoder work per α")

    raw = [config.eval_set(s, i) for i, s in enumerate(sets)]
    from lmc_ray.compute.data import read_table

    frames = [read_table(s) for s in raw]
    paper_texts = [(list(f[s.text[0]]), list(f[s.text[1]])) for f, s in zip(frames, raw)]
    paper_labels = [list(f[s.label]) for f, s in zip(frames, raw)]
    paper = paper_pair([str(x) for x in paths[:2]], paper_texts, paper_labels, device,
                       config.grid(10)[:args.paper_alphas]) / args.paper_alphas
    print(f"\n{'technique':<46} | ms per α | real tokens | useful TFLOP/s | of ceiling | full sweep | "
          f"max |Δ loss| vs fp32 | CUDA graphs | compiles per set")
    print(f"{'paper (fp32, pad 512, batch 512, reloads)':<46} | {paper * 1e3:8.1f} | "
          f"{sum(lengths) / (512 * len(lengths)):11.0%} | {flops / paper / 1e12:14.2f} | {flops / paper / 1e12 / top:10.1%} | "
          f"{FULL_PAIRS * 10 * paper / 3600:8.1f} h |")
    reference, best, failed = None, None, []
    for k, (name, dtype, packing, graphs, levers) in enumerate(TECHNIQUES):
        if device.type != "cuda" and (graphs or dtype == "tfloat32"):
            print(f"{name:<46} | skipped: {'CUDA graphs need' if graphs else 'TF32 needs'} a GPU")
            continue
        if device.type != "cuda" and packing:
            if levers.get("compile_whole") and not args.cpu_compiler:
                print(f"{name:<46} | skipped: on a CPU only with --cpu-compiler")
                continue
            levers = {**levers, "compiler": args.cpu_compiler}
        if k > 1 and time.monotonic() - start > args.budget - RESERVE:
            print(f"{name:<46} | skipped: past the budget ({time.monotonic() - start:.0f} of {args.budget:.0f} s)")
            continue
        try:
            seconds, losses, processed, core, per_set = technique(paths, pl.datas, device, dtype, packing, graphs,
                                                                  levers, batch_tokens, args.repeat)
        except Exception as e:  # one row's failure (a compile the GPU's stack refuses) must not cost the others
            print(f"{name:<46} | failed: {first_line(e)}")
            failed.append(name)
            continue
        reference = losses if reference is None else reference
        best = min(best or (seconds, name), (seconds, name))
        recorded, failures = graphs_recorded(core)
        print(f"{name:<46} | {seconds * 1e3:8.1f} | {sum(lengths) / processed:11.0%} | {flops / seconds / 1e12:14.2f} | "
              f"{flops / seconds / 1e12 / top:10.1%} | {FULL_POINTS * seconds / 60:6.1f} min | "
              f"{np.abs(losses - reference).max():20.1e} | {recorded:>11} | "
              f"{', '.join(f'{s} {n}' for s, n in per_set.items())}")
        for failure in failures:
            print(f"    CUDA graph not recorded, {failure}")
        del core
    print(f"fastest: {best[1]}, {paper / best[0]:.0f}x the paper's procedure; projected full MNLI sweep "
          f"{FULL_POINTS * best[0] / 60:.1f} min on this device (target: 12)")

    shape = config.from_dict({**base, "store": str(work / "shape"), "eval_sets": sets + [full_hans]})
    try:
        paper_shape([str(x) for x in paths], plan.prepare(shape).datas, device, flops_of)
    except Exception as e:  # out of memory above all: said in one line, and the sweep still runs
        print(f"paper shape: failed: {first_line(e)}")
        failed.append("paper shape")

    t = time.perf_counter()
    local.run(plan.prepare(cfg), progress=False)
    sync(device)
    n_pairs = args.models * (args.models - 1) // 2
    print(f"sweep: {args.models} models, {n_pairs} pairs × 10 α × 2 sets through local.run, defaults "
          f"(dtype, packing: auto) in {time.perf_counter() - t:.1f} s, loading included")
    print(f"done in {time.monotonic() - start:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
