"""The compute core on one GPU (no Ray), one row per technique, against the paper's procedure, in one run.

    python benchmarks/gpu.py [--data-dir ../shared/data] [--layers 12 --hidden 768 --heads 12]

Models: N BERT classifiers built from a config (random weights plus a seeded perturbation each: nothing can
be downloaded there), with a WordPiece vocabulary built from the MNLI text. Data: the first 512 MNLI
dev_matched examples and 512 HANS examples balanced over its 30 subcases, as configs/mnli.yaml reads them.
It prints, measured in this one run:
  ceiling    an 8192³ bf16 matmul (torch.matmul), TFLOP/s
  paper      the paper's procedure for one pair on the same GPU (checkpoints reloaded, state dict rebuilt on
             the CPU per α, every input padded to 512, batch 512, fp32)
  techniques one row each: the core's whole line for one pair (lerp in place, both eval sets, metrics counted
             on the device, one host copy), as ms per α; the fraction of processed tokens that are real;
             the encoder's useful TFLOP/s and its fraction of the ceiling; the projected full MNLI sweep
             (4,950 pairs × 8 interior α + 100 endpoints); and the largest loss difference from the fp32 row
  sweep      a whole N-model sweep through local.run with the config's defaults (dtype, packing: auto)
Sized to finish in a few minutes on an H100; on a CPU (toy size, tests/test_benchmarks.py) run it with
--layers 2 --hidden 64 --heads 2 --examples 32: rows that need CUDA say so.
"""
from __future__ import annotations

import argparse
import shutil
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
from lmc_ray.testing.machine import machine
from lmc_ray.testing.population import make_population

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["entailment", "neutral", "contradiction"]


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
    """The paper's per-pair procedure, timed for one pair (the curve itself is not needed here)."""
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


# (row, dtype, packing, CUDA graphs): each adds one thing to the fp32 row or the row before it; the last is what
# auto picks on a GPU. The TF32 row's |Δ loss| against fp32 is TF32's error on a real GPU.
TECHNIQUES = [
    ("fp32, padded batches (the old default)", "float32", False, False),
    ("tf32 matmuls, padded batches", "tfloat32", False, False),
    ("bf16, padded batches", "bfloat16", False, False),
    ("bf16, padded + CUDA graphs", "bfloat16", False, True),
    ("bf16, packed (FlexAttention)", "bfloat16", True, False),
    ("bf16, packed + CUDA graphs (auto)", "bfloat16", True, True),
]
FULL_PAIRS, FULL_MODELS = 4950, 100
FULL_POINTS = FULL_PAIRS * 8 + FULL_MODELS  # every pair's interior α, and each model alone once


def technique(paths, datas, device, dtype, packing, graphs, batch_tokens, repeat):
    """(seconds per α, the interior losses per set, processed tokens per α) for one pair's line."""
    from transformers import AutoModelForSequenceClassification

    template = AutoModelForSequenceClassification.from_pretrained(paths[0])
    core = Core(template, datas, device, dtype, batch_tokens, 512, packing=packing, graphs=graphs)
    wa, wb = (core.resident(AutoModelForSequenceClassification.from_pretrained(x).state_dict()) for x in paths[:2])
    line = lambda: core.curve(wa, wb, config.grid(10), 0, (0.0, 0.0))  # noqa: E731
    seconds = timed(line, device, repeat) / 8
    losses = np.array([[m[0, LOSS] for m in ms] for _, ms in sorted(line().interior.items())])
    processed = sum(b["input_ids"].numel() for ev in core.evaluators for b in ev.batches)
    return seconds, losses, processed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch-tokens", default="auto", help="tokens per batch (padded) or stream (packed)")
    p.add_argument("--repeat", type=int, default=5, help="timed lines per technique")
    args = p.parse_args()
    batch_tokens = args.batch_tokens if args.batch_tokens == "auto" else int(args.batch_tokens)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quiet()
    data = Path(args.data_dir)
    mnli_path, hans_path = data / "mnli" / "dev_matched.tsv", data / "hans" / "heuristics_evaluation_set.regenerated.tsv"
    mnli = pd.read_csv(mnli_path, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-gpu-"))
    print(machine())
    top = ceiling(device)
    print(f"ceiling: {'8192³ bf16' if device.type == 'cuda' else '2048³ fp32'} matmul {top:.2f} TFLOP/s")

    t = time.perf_counter()
    paths = make_population(work / "pop", args.models, list(mnli.premise) + list(mnli.hypothesis), LABELS,
                            layers=args.layers, hidden=args.hidden, heads=args.heads, noise=0.01, vocab_size=30522)
    print(f"population: {args.models} BERTs ({args.layers} layers, hidden {args.hidden}) built in {time.perf_counter() - t:.0f} s")
    sets = [{"name": "mnli", "path": str(mnli_path), "text": ["premise", "hypothesis"], "label": "gold_label",
             "max_examples": args.examples},
            {"name": "hans", "path": str(hans_path), "text": ["sentence1", "sentence2"], "label": "gold_label",
             "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]},
             "balance_by": "subcase", "max_examples": args.examples}]
    cfg = config.from_dict({"models": [str(x) for x in paths], "store": str(work / "store"), "alphas": 10,
                            "eval_sets": sets, "device": device.type, "cache_dir": str(work / "c")})
    pl = plan.prepare(cfg)
    from transformers import AutoConfig

    arch = AutoConfig.from_pretrained(paths[0])
    lengths = [len(x) for d in pl.datas for x in d.input_ids]
    flops = encoder_flops(lengths, arch.num_hidden_layers, arch.hidden_size, arch.intermediate_size)
    print(f"eval sets: {', '.join(f'{d.name} {len(d)} examples' for d in pl.datas)}; {sum(lengths):,} real tokens, "
          f"{flops / 1e12:.2f} TFLOP of useful encoder work per α")

    raw = [config.eval_set(s, i) for i, s in enumerate(sets)]
    from lmc_ray.compute.data import read_table

    frames = [read_table(s) for s in raw]
    paper_texts = [(list(f[s.text[0]]), list(f[s.text[1]])) for f, s in zip(frames, raw)]
    paper_labels = [list(f[s.label]) for f, s in zip(frames, raw)]
    paper = paper_pair([str(x) for x in paths[:2]], paper_texts, paper_labels, device, config.grid(10)) / 10
    print(f"\n{'technique':<40} | ms per α | real tokens | useful TFLOP/s | of ceiling | full sweep | max |Δ loss| vs fp32")
    print(f"{'paper (fp32, pad 512, batch 512, reloads)':<40} | {paper * 1e3:8.1f} | "
          f"{sum(lengths) / (512 * len(lengths)):11.0%} | {flops / paper / 1e12:14.2f} | {flops / paper / 1e12 / top:10.1%} | "
          f"{FULL_PAIRS * 10 * paper / 3600:8.1f} h |")
    reference, best = None, None
    for name, dtype, packing, graphs in TECHNIQUES:
        if device.type != "cuda" and (graphs or dtype == "tfloat32"):
            print(f"{name:<40} | skipped: {'CUDA graphs need' if graphs else 'TF32 needs'} a GPU")
            continue
        seconds, losses, processed = technique(paths, pl.datas, device, dtype, packing, graphs, batch_tokens,
                                               args.repeat)
        reference = losses if reference is None else reference
        best = min(best or (seconds, name), (seconds, name))
        print(f"{name:<40} | {seconds * 1e3:8.1f} | {sum(lengths) / processed:11.0%} | {flops / seconds / 1e12:14.2f} | "
              f"{flops / seconds / 1e12 / top:10.1%} | {FULL_POINTS * seconds / 60:6.1f} min | "
              f"{np.abs(losses - reference).max():.1e}")
    print(f"fastest: {best[1]}, {paper / best[0]:.0f}x the paper's procedure; projected full MNLI sweep "
          f"{FULL_POINTS * best[0] / 60:.1f} min on this device (target: 12)")

    t = time.perf_counter()
    local.run(plan.prepare(cfg), progress=False)
    sync(device)
    n_pairs = args.models * (args.models - 1) // 2
    print(f"sweep: {args.models} models, {n_pairs} pairs × 10 α × 2 sets through local.run, defaults "
          f"(dtype, packing: auto) in {time.perf_counter() - t:.1f} s, loading included")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
