"""The compute core on one GPU (no Ray): BERT-base-sized classifiers, MNLI + HANS, against the paper's procedure.

    python benchmarks/gpu.py [--data-dir ../shared/data] [--layers 12 --hidden 768 --heads 12]

Models: N BERT classifiers built from a config (random weights plus a seeded perturbation each: nothing can
be downloaded there), with a WordPiece vocabulary built from the MNLI text. Data: the first 512 MNLI
dev_matched examples and 512 HANS examples balanced over its 30 subcases, as configs/mnli.yaml reads them.
It prints, measured in this one run:
  ceiling   an 8192³ bf16 matmul (torch.matmul), TFLOP/s
  core      lmc-ray's core (bf16, fused attention, length-sorted token-budget batches, weights resident on
            the GPU, in-place lerp): seconds per α per eval set, non-padding tokens/s, the encoder's useful
            TFLOP/s and its fraction of the ceiling; then a whole N-model sweep through local.run
  paper     the paper's procedure for one pair on the same GPU (checkpoints reloaded, state dict rebuilt on
            the CPU per α, every input padded to 512, batch 512, fp32), seconds per pair
  projected the paper's full MNLI sweep (100 models: 4,950 pairs × 10 α × 512 examples, plus HANS) with the
            core and with the paper's procedure
Sized to finish in a few minutes on an H100; on a CPU run it with --layers 2 --hidden 64 --examples 64.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from lmc_ray import config, local, plan
from lmc_ray.core import Core
from lmc_ray.interpolate import WorkingModel
from lmc_ray.synthetic import make_population

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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-tokens", default="8192,16384,32768,65536", help="padded-token budgets to try")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = Path(args.data_dir)
    mnli_path, hans_path = data / "mnli" / "dev_matched.tsv", data / "hans" / "heuristics_evaluation_set.regenerated.tsv"
    mnli = pd.read_csv(mnli_path, sep="\t", quoting=3, nrows=3000)
    work = Path(tempfile.mkdtemp(prefix="lmc-gpu-"))
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}")
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
                            "eval_sets": sets, "dtype": args.dtype, "device": device.type,
                            "max_batch_size": 512, "cache_dir": str(work / "c")})
    pl = plan.prepare(cfg)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(paths[0])
    cfg_m = model.config
    best, lerps = {}, []  # eval set -> (seconds per α, batch_tokens); seconds to lerp all weights
    for budget in [int(b) for b in args.batch_tokens.split(",")]:
        core = Core(model, pl.datas, device, args.dtype, budget, 512)
        wa, wb = (core.resident(AutoModelForSequenceClassification.from_pretrained(x).state_dict()) for x in paths[:2])
        lerp = timed(lambda: core.working.set(wa, wb, 0.37), device, 5)
        lerps.append(lerp)
        for ev, d in zip(core.evaluators, pl.datas):
            alone = timed(lambda: ev(core.working.model), device, 5)
            lengths = [len(x) for x in d.input_ids]
            flops = encoder_flops(lengths, cfg_m.num_hidden_layers, cfg_m.hidden_size, cfg_m.intermediate_size)
            padded = sum(b["input_ids"].numel() for b in ev.batches)
            best[d.name] = min(best.get(d.name, (float("inf"), 0)), (alone, budget))
            print(f"core {d.name}, batch_tokens {budget}: {len(d)} examples, {sum(lengths)} tokens "
                  f"({sum(lengths) / padded:.0%} of the padded batches, {len(ev.batches)} batches): {alone * 1e3:.1f} ms "
                  f"per α + lerp {lerp * 1e3:.1f} ms; {sum(lengths) / alone:,.0f} non-padding tokens/s; "
                  f"{flops / alone / 1e12:.2f} TFLOP/s useful = {flops / alone / 1e12 / top:.0%} of the ceiling")
        del core, wa, wb
    per_alpha = sum(t for t, _ in best.values()) + min(lerps)  # every eval set, one lerp
    cfg.batch_tokens = min(best.values())[1]
    t = time.perf_counter()
    local.run(pl, progress=False)
    sync(device)
    sweep = time.perf_counter() - t
    n_pairs = args.models * (args.models - 1) // 2
    print(f"core sweep: {args.models} models, {n_pairs} pairs × 10 α × 2 sets in {sweep:.1f} s (load included)")

    raw = [config.eval_set(s, i) for i, s in enumerate(sets)]
    from lmc_ray.data import read_table

    frames = [read_table(s) for s in raw]
    paper_texts = [(list(f[s.text[0]]), list(f[s.text[1]])) for f, s in zip(frames, raw)]
    paper_labels = [list(f[s.label]) for f, s in zip(frames, raw)]
    paper = paper_pair([str(x) for x in paths[:2]], paper_texts, paper_labels, device, config.grid(10))
    print(f"paper's procedure: {paper:.1f} s for one pair (10 α × 2 sets, pad 512, batch 512, fp32, reloads)")

    full_pairs, full_models = 4950, 100
    core_full = (full_pairs * 8 + full_models) * per_alpha
    print(f"projected paper's full MNLI sweep (100 models, 4,950 pairs, MNLI + HANS): core {core_full / 60:.1f} min "
          f"on this device; paper's procedure {full_pairs * paper / 3600:.1f} h ({full_pairs * paper / core_full:.0f}x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
