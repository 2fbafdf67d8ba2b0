"""Peak resident memory of a process and all its descendants (Ray's raylet, workers, actors included)."""
import threading
import time

import psutil


class PeakRSS:
    """Samples every 0.1 s while the block runs; `.peak` is the largest total RSS seen, in bytes."""

    def __init__(self, pid: int | None = None):
        self.process = psutil.Process(pid)
        self.peak = 0

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

        def run():
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, self._total())
                except psutil.Error:
                    return
                time.sleep(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
