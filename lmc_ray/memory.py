"""Resident memory of a process and all its descendants (Ray's raylet, workers, actors included), sampled
while a block runs: the peak for benchmarks, the whole series for the load test that checks it stays flat."""
import threading
import time

import psutil


class PeakRSS:
    """Samples every `every` s while the block runs; `.peak` is the largest total RSS seen, in bytes, and
    `.samples` every (seconds since start, bytes, probe()) seen."""

    def __init__(self, pid: int | None = None, every: float = 0.1, probe=lambda: None):
        self.process = psutil.Process(pid)
        self.every, self.probe = every, probe
        self.peak = 0
        self.samples = []

    def _total(self) -> int:
        total = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a process that ended between listing and reading
                pass
        return total

    def __enter__(self):
        self._stop = threading.Event()

        start = time.time()

        def run():
            while not self._stop.is_set():
                try:
                    rss = self._total()
                except psutil.Error:
                    return
                self.peak = max(self.peak, rss)
                self.samples.append((time.time() - start, rss, self.probe()))
                time.sleep(self.every)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
