"""Run a Plan in this process, without Ray: the compute core alone (benchmarks, small runs, debugging)."""
from __future__ import annotations

from .plan import Plan
from .progress import track
from .residents import Residents


def run(plan: Plan, progress: bool = True) -> None:
    with plan.writing():
        n = len(plan.names)
        res = Residents(plan.cfg, list(range(n)), plan.labels, plan.datas, plan.revisions)
        missing = plan.missing_endpoints()
        ends = plan.gather_endpoints(track(((i, res.endpoint(i)) for i in missing), len(missing), "endpoints",
                                           "model", not progress))
        for a, b in track(plan.pending, len(plan.pending), "pairs", "pair", not progress):
            plan.record_pair(a, b, res.curve(a, b, plan.end_losses(ends, a, b)), ends)
