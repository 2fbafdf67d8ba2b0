"""What a benchmark ran on, as detected (not as assumed): the line each benchmark prints first."""
from __future__ import annotations

import os


def machine() -> str:
    import psutil
    import torch

    gpu = (f"GPU {torch.cuda.get_device_name()} ({torch.cuda.device_count()})" if torch.cuda.is_available()
           else "no GPU")
    return (f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")
