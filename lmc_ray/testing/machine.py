"""What a benchmark ran on, as detected (not as assumed): the line each benchmark prints first."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu() -> str:
    """The processor's name and vector level, and which half-precision formats it multiplies natively: without
    avx512_bf16 / AMX (bf16) or avx512_fp16 / AMX-FP16 a CPU converts in software, and bf16 or fp16 can run several
    times slower than fp32 (docs/performance.md has such a run)."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    half = sorted(flags & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"})
    return (f"{name}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{'half precision in hardware: ' + ' '.join(half) if half else 'no bf16/fp16 instructions'}")


def machine() -> str:
    import torch

    gpu = (f"GPU {torch.cuda.get_device_name()} ({torch.cuda.device_count()})" if torch.cuda.is_available()
           else "no GPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no psutil: the GPU machine may lack it
    return (f"machine: {os.cpu_count()} CPUs ({cpu()}), {memory / 2**30:.0f} GiB, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}")
