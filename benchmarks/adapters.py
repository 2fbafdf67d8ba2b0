"""LoRA adapters against the same models as full checkpoints: memory of the process that holds them, and pairs/s.

    .venv/bin/python benchmarks/adapters.py [--models 50] [--pairs 20] [--texts 64] [--layers 4 --hidden 128]

Population: a GPT-2 base built from a config (by default tiny: 4 layers, hidden 128; a byte-level BPE of 2,000 tokens
learned from CoLA sentences) and --models LoRA adapters of it (rank 8 on c_attn, c_proj and c_fc, seeded factors, written
by PEFT). The baseline is what one does without adapter support: each adapter merged into its base by PEFT
(merge_and_unload) and saved as a full checkpoint, then swept as full models. Both populations are the same
models, so their lines are the same.
Each side runs in its own fresh process, which holds all --models models as one actor would (compute/residents.py),
and reports: the bytes of weights it holds (resident_bytes), its whole RSS after loading (Python, torch and
transformers included), on a GPU the device memory allocated after loading, and the first --pairs lines
(10 α, endpoints included) on the first --texts CoLA sentences, timed. Printed: both rows and the ratios, and the
largest difference between the two sides' losses on those lines. The sweep's device is `auto`: the GPU where there
is one (benchmarks/device.sh runs this there after gpu.py), with the dtype and batching a sweep would use there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def build(work: Path, n: int, texts: list[str], layers: int, hidden: int, heads: int) -> tuple[list[Path], list[Path]]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmc_ray.compute.models import quiet
    from lmc_ray.testing.lm_population import make_adapters, make_lm_population

    quiet()
    (base,) = make_lm_population(work, 0, texts, layers=layers, hidden=hidden, heads=heads, vocab_size=2000)
    ads = make_adapters(base, work / "adapters", [8] * n, [["c_attn", "c_proj", "c_fc"]] * n, scale=0.03)
    full = []
    for k, a in enumerate(ads):
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(a)).merge_and_unload()
        full.append(work / "merged" / f"m{k}")
        merged.save_pretrained(full[-1])
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(full[-1])
    return ads, full


def measure(models: list[str], data: str, pairs: int, texts: int) -> dict:
    """In this process: hold every model, as one actor would, then run the first `pairs` lines."""
    import torch

    from lmc_ray import config
    from lmc_ray.compute.models import quiet
    from lmc_ray.compute.residents import Residents
    from lmc_ray.compute.work import Pair
    from lmc_ray.execution import plan

    quiet()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="lmc-adapters-"))
    cfg = config.from_dict({"models": models, "store": str(work / "store"), "alphas": 10, "cache_dir": str(work / "c"),
                            "eval_sets": [{"name": "cola", "path": data, "text": ["sentence"], "max_examples": texts}]})
    p = plan.prepare(cfg)
    start = time.perf_counter()
    res = Residents(p.cfg, list(range(len(models))), p.labels, p.datas, p.revisions, p.base_revision)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    load = time.perf_counter() - start
    gpu = torch.cuda.memory_allocated() if cuda else None
    with open("/proc/self/statm") as f:  # resident pages, as psutil reads them (psutil may be absent: device.sh)
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    ends = [float(res.endpoint(e).metrics[0][0, 1]) for e in p.endpoints[: pairs + 1]]
    chosen = [Pair(0, b) for b in range(1, pairs + 1)]
    start = time.perf_counter()
    lines = [res.pair(q, (ends[q.a], ends[q.b])) for q in chosen]
    wall = time.perf_counter() - start
    losses = [[float(m[0][0, 1]) for _, m in sorted(r.line.interior.items())] for r in lines]
    return {"held_mb": res.resident_bytes() / 2**20, "rss_mb": rss / 2**20, "load_s": load,
            "gpu_mb": gpu / 2**20 if cuda else None, "device": str(res.core.device),
            "pairs_per_s": pairs / wall, "losses": losses}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="holds cola/in_domain_dev.tsv")
    ap.add_argument("--measure", nargs=2, metavar=("MODELS_JSON", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(Path(args.measure[0]).read_text()), args.measure[1], args.pairs,
                                 args.texts)))
        return
    from lmc_ray.testing.machine import machine

    work = Path(tempfile.mkdtemp(prefix="lmc-adapters-"))
    df = pd.read_csv(Path(args.data_dir) / "cola" / "in_domain_dev.tsv", sep="\t", header=None, quoting=3,
                     names=["source", "label", "mark", "sentence"])
    data = work / "cola.jsonl"
    df[["sentence"]].to_json(data, orient="records", lines=True)
    start = time.perf_counter()
    ads, full = build(work, args.models, list(df.sentence), args.layers, args.hidden, args.heads)
    print(machine())
    print(f"{args.models} models: GPT-2 ({args.layers} layers, hidden {args.hidden}) + LoRA rank 8 on c_attn, c_proj, "
          f"c_fc; {args.pairs} lines of 10 α on the first {args.texts} CoLA sentences; "
          f"built in {time.perf_counter() - start:.0f} s")
    out = {}
    for name, models in (("full checkpoints (merged, baseline)", full), ("LoRA adapters", ads)):
        listing = work / f"{len(out)}.json"
        listing.write_text(json.dumps([str(m) for m in models]))
        done = subprocess.run([sys.executable, __file__, "--measure", str(listing), str(data), "--pairs",
                               str(args.pairs), "--texts", str(args.texts)], capture_output=True, text=True, check=True)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    f, a = out.values()
    gpu = f["gpu_mb"] is not None
    print(f"on {f['device']}\n{'':38} {'weights held':>13} {'process RSS':>12}" + (f" {'GPU memory':>12}" if gpu else "")
          + f" {'load':>7} {'pairs/s':>8}")
    for name, r in out.items():
        print(f"{name:38} {r['held_mb']:>10.1f} MB {r['rss_mb']:>9.1f} MB" + (f" {r['gpu_mb']:>9.1f} MB" if gpu else "")
              + f" {r['load_s']:>6.1f}s {r['pairs_per_s']:>8.2f}")
    diff = max(abs(x - y) for lf, la in zip(f["losses"], a["losses"]) for x, y in zip(lf, la))
    print(f"adapters / full: weights held {a['held_mb'] / f['held_mb']:.3f}x, process RSS {a['rss_mb'] / f['rss_mb']:.3f}x, "
          + (f"GPU memory {a['gpu_mb'] / f['gpu_mb']:.3f}x, " if gpu else "")
          + f"pairs/s {a['pairs_per_s'] / f['pairs_per_s']:.2f}x; largest loss difference on the lines {diff:.1e}")


if __name__ == "__main__":
    main()
