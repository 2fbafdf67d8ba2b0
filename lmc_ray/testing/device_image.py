"""Run a benchmark as the bare GPU machine of benchmarks/device.sh would: without the packages its image lacks.

    python -m lmc_ray.testing.device_image benchmarks/gpu.py --layers 2 ...

That machine's image has torch, transformers, pandas, pyarrow, scikit-learn, matplotlib, fsspec, tqdm and pyyaml,
but none of the packages below, nor surely psutil or pip (pydantic travels as wheels: benchmarks/device.sh). A benchmark that comes
to import one of them, at its top or halfway through, would fail there and waste the GPU's limited time; the toy runs
in tests/test_benchmarks.py go through this runner so that such an import fails here first.
"""
from __future__ import annotations

import importlib.abc
import runpy
import sys
from pathlib import Path

ABSENT = {"ray", "datasets", "s3fs", "duckdb", "moto", "boto3", "botocore", "aiobotocore", "psutil", "pip"}


class _Hiding(importlib.abc.MetaPathFinder):
    """One of the import system's finders, blind to ABSENT: for those, every finder answers 'not here', so an
    import fails as on that machine and a probe (importlib.util.find_spec) answers None, as there."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in ABSENT or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):  # invalidate_caches, find_distributions, ...
        return getattr(self.inner, attr)


def main() -> None:
    sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, str(Path(sys.argv[0]).resolve().parent))  # as `python script` would
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
