"""The GPU memory plan for 7B-class bases: what one actor holds, and how many adapters (or full models) fit.

    .venv/bin/python benchmarks/memory_plan.py [--batch-tokens 16384] [--rank 16]

No weights are read: each architecture is built from its published config on PyTorch's meta device, and its
parameters counted as interpolate.WorkingModel holds them (a tied tensor once). The figures are the ones the
sweep's own check uses (lmc_ray/compute/footprint.py, which refuses a block of models that does not fit, in one
line with these numbers): fp32 weights for exact mixing (the base once, each adapter's factors), one bf16
working copy, one batch of fp32 logits with its cross-entropy beside it, and 90 % of the GPU usable.
Adapters: rank --rank on q_proj, k_proj, v_proj and o_proj of every layer (a common LoRA recipe).
"""
from __future__ import annotations

import argparse

import torch

from lmc_ray.compute.footprint import HEADROOM, estimate

ARCHS = {  # published configs (config.json on the hub), the fields that size the model
    "Llama-2-7B": dict(cls="LlamaConfig", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "Qwen2.5-7B": dict(cls="Qwen2Config", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4),
}
GPUS = {"80 GB (A100/H100)": 80e9, "141 GB (H200)": 141e9}


def build(arch: dict):
    import transformers

    cfg = getattr(transformers, arch["cls"])(**{k: v for k, v in arch.items() if k != "cls"})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg), cfg


def lora_bytes(model, rank: int) -> int:
    """fp32 factors of a rank-`rank` LoRA on the attention projections: r·(in + out) values per target."""
    n = sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj"))
    return 4 * n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-tokens", type=int, default=16384, help="tokens per batch (core.BATCH_TOKENS on GPUs)")
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    G = 2**30
    print(f"bf16 working copy, batch_tokens {args.batch_tokens}, LoRA rank {args.rank} on q/k/v/o, "
          f"{HEADROOM:.0%} of the GPU usable")
    print(f"{'base':12} {'params':>7} {'base fp32':>10} {'working':>8} {'logits':>7} {'adapter':>8} "
          + " ".join(f"{'adapters / ' + g:>28} {'full models / ' + g:>30}" for g in GPUS))
    for name, arch in ARCHS.items():
        model, cfg = build(arch)
        params = sum(p.numel() for p in model.parameters())
        one = lora_bytes(model, args.rank)
        fixed = estimate(params, 2, [], True, args.batch_tokens, cfg.vocab_size)
        bare = estimate(params, 2, [], False, args.batch_tokens, cfg.vocab_size)
        fits = []
        for size in GPUS.values():
            fits.append(max(0, int((HEADROOM * size - fixed.total) // one)))
            fits.append(max(0, int((HEADROOM * size - bare.total) // (4 * params))))
        print(f"{name:12} {params / 1e9:>6.2f}B {fixed.resident / G:>7.1f} GiB {fixed.working / G:>4.1f} GiB "
              f"{fixed.logits / G:>3.1f} GiB {one / 2**20:>5.0f} MiB "
              + " ".join(f"{a:>28} {f:>30}" for a, f in zip(fits[::2], fits[1::2])))


if __name__ == "__main__":
    main()
