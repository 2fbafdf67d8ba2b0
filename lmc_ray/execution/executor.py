"""What both executors share: `run(plan, progress) -> RunReport`, and choosing one by name."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

EXECUTORS = ("ray", "local")


@dataclass
class RunReport:
    """What one run of an executor computed (what the store had already is not counted) and the seconds each of
    its workers spent computing: one per Ray actor, one for the in-process executor; empty when nothing was to do."""
    endpoints: int = 0
    pairs: int = 0
    planes: int = 0
    busy: list[float] = field(default_factory=list)


def named(executor: str):
    """The executor module for `executor` ("ray" or "local"); each has run(plan, progress) -> RunReport."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r}: use 'ray' or 'local'")
    if executor == "ray":
        from . import ray_sweep as chosen
    else:
        from . import local as chosen
    return chosen
