"""Several α in one batched forward (torch.func.functional_call + vmap) against one α at a time.

    .venv/bin/python benchmarks/alpha_vmap.py [--examples 64]

For each model size, the 8 interior α of the paper's grid on the same real MNLI batch: (a) what the core
does, an in-place lerp into one working model and a forward per α; (b) the 8 interpolated weight sets
stacked and evaluated by one vmapped forward, with PyTorch's fused attention (SDPA, which vmap has no
batching rule for on the CPU) and with plain eager attention. Prints ms per pair, the ratios, and the largest
difference in logits (they must agree).
"""
from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch.func import functional_call

from lmc_ray import config
from lmc_ray.compute.interpolate import WorkingModel
from lmc_ray.training.pretrain import bert_config, build_tokenizer
from lmc_ray.testing.machine import machine

ROOT = Path(__file__).resolve().parents[1]
MNLI = ROOT.parent / "shared" / "data" / "mnli" / "dev_matched.tsv"
SIZES = [(1, 32), (2, 64), (2, 128), (4, 256)]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main():
    from transformers import BertForSequenceClassification

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    warnings.filterwarnings("ignore", message=".*batching rule.*")  # the point measured, said once above
    df = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=3000)
    tok = build_tokenizer(list(df.premise) + list(df.hypothesis), 8000)
    batch = tok(list(df.premise[: args.examples]), list(df.hypothesis[: args.examples]), padding=True,
                return_tensors="pt")
    alphas = [a for a in config.grid(10) if 0 < a < 1]
    print(machine())
    print(f"batch: {args.examples} MNLI examples padded to "
          f"{batch['input_ids'].shape[1]} tokens; {len(alphas)} interior α per pair")
    for layers, hidden in SIZES:
        torch.manual_seed(0)
        cfg = bert_config(len(tok), ["e", "n", "c"], layers, hidden, max(1, hidden // 64) * 2, dropout=0.0)
        a, b, work = (BertForSequenceClassification(cfg).eval() for _ in range(3))
        eager_cfg = copy.deepcopy(cfg)
        eager_cfg._attn_implementation = "eager"
        eager = BertForSequenceClassification(eager_cfg).eval()
        wa, wb = dict(a.named_parameters()), dict(b.named_parameters())
        working = WorkingModel(work)  # what the core does
        sa, sb = working.weights_of(a.state_dict()), working.weights_of(b.state_dict())

        @torch.inference_mode()
        def one_at_a_time():
            out = []
            for al in alphas:
                working.set(sa, sb, al)
                out.append(work(**batch).logits)
            return torch.stack(out)

        al = torch.tensor(alphas)

        @torch.inference_mode()
        def vmapped(model):
            stacked = {k: torch.lerp(wa[k].expand(len(alphas), *wa[k].shape),
                                     wb[k].expand(len(alphas), *wb[k].shape),
                                     al.view(-1, *[1] * wa[k].dim())) for k in wa}
            return torch.vmap(lambda p: functional_call(model, p, kwargs=dict(batch)).logits)(stacked)

        ref = one_at_a_time()
        diff = max((ref - vmapped(m)).abs().max().item() for m in (work, eager))
        seq = timed(one_at_a_time, args.repeats)
        fused, plain = (timed(lambda m=m: vmapped(m), args.repeats) for m in (work, eager))
        print(f"{layers} layers, hidden {hidden:3d}: one α at a time {seq * 1e3:7.1f} ms/pair; vmapped, fused attention "
              f"{fused * 1e3:7.1f} ({seq / fused:.2f}x), eager attention {plain * 1e3:7.1f} ({seq / plain:.2f}x); "
              f"max |Δ logits| {diff:.1e}")


if __name__ == "__main__":
    main()
