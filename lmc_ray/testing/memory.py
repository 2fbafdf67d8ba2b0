"""Resident memory of a process and all its descendants (Ray's raylet, workers, actors included), sampled
while a block runs: the peak for benchmarks, the whole series for the load test that checks it stays flat.

Summed RSS counts a shared page (Ray's object store, mapped by every worker) once per process that maps
it, so it overstates; PSS divides each shared page among its mappers and sums to what the tree really
occupies. Both are kept: RSS is cheap and portable; PSS needs Linux (/proc/PID/smaps_rollup) and costs CPU
(the kernel walks every mapping, Ray's large object-store mapping included), so it is read only every
`pss_every` seconds: one reading of a local Ray tree took ~30 ms here (RSS: ~3 ms), and sampled every
0.1 s it slowed a Ray sweep on 2 cores by a third or more."""
import threading
import time

import psutil


class PeakRSS:
    """Samples every `every` s while the block runs; `.peak` is the largest total RSS seen, in bytes,
    `.peak_pss` the largest total PSS (with pss=True, on Linux), and `.samples` every (seconds since `.start`,
    RSS bytes, probe()) seen."""

    def __init__(self, pid: int | None = None, every: float = 0.1, probe=lambda: None, pss: bool = False,
                 pss_every: float = 5.0):
        self.process = psutil.Process(pid)
        self.every, self.probe, self.pss, self.pss_every = every, probe, pss, pss_every
        self.peak = self.peak_pss = 0
        self.samples = []

    def _total(self, with_pss: bool) -> tuple[int, int]:
        rss = pss = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
                if with_pss:
                    pss += p.memory_full_info().pss
            except psutil.Error:  # a process that ended between listing and reading
                pass
        return rss, pss

    def __enter__(self):
        self._stop = threading.Event()

        start = self.start = time.time()

        def run():
            last_pss = -float("inf")
            while not self._stop.is_set():
                with_pss = self.pss and time.time() - last_pss >= self.pss_every
                last_pss = time.time() if with_pss else last_pss
                try:
                    rss, pss = self._total(with_pss)
                except psutil.Error:
                    return
                self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
                self.samples.append((time.time() - start, rss, self.probe()))
                time.sleep(self.every)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
