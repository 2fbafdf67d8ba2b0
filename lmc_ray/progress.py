"""Progress that reads well in a terminal (a tqdm bar), in Jupyter (tqdm's widget) and in `ray job logs` or a
CI log (a line now and then): tqdm redraws with carriage returns, which a log file shows as one endless line."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def bar(total: int, desc: str, unit: str = "it", disable: bool = False, every: float = 10.0):
    if disable or sys.stderr.isatty() or _notebook():
        return tqdm(total=total, desc=desc, unit=unit, disable=disable)
    return Lines(total, desc, unit, every)


def _notebook() -> bool:
    """A Jupyter kernel, where tqdm.auto draws a widget (its stderr is no terminal, but no log file either)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Lines:
    """`desc: n/total (pct) rate unit/s, elapsed, ETA` at most every `every` seconds, and once at the end."""

    def __init__(self, total: int, desc: str, unit: str, every: float):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.start, self.shown = 0, time.monotonic(), None

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.shown is None or time.monotonic() - self.shown >= self.every or self.n >= self.total:
            self._show()

    def _show(self) -> None:
        self.shown = time.monotonic()
        elapsed = self.shown - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - self.n) / rate) if rate > 0 else "?"
        pct = 100 * self.n / self.total if self.total else 100
        print(f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) {rate:.2f} {self.unit}/s, "
              f"elapsed {_duration(elapsed)}, ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.n < self.total:
            self._show()


def track(items, total: int, desc: str, unit: str = "it", disable: bool = False):
    """The items of an iterable, counted on a bar as they are consumed."""
    b = bar(total, desc, unit, disable or not total)
    for item in items:
        yield item
        b.update()
    b.close()
