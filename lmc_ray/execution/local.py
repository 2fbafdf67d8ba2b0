"""Run a Plan in this process, without Ray: the compute core alone (benchmarks, small runs, debugging)."""
from __future__ import annotations

from .plan import Plan
from .progress import track
from ..storage.recorder import Recorder
from ..compute.residents import Residents


def run(plan: Plan, progress: bool = True) -> None:
    with Recorder(plan) as rec:
        if rec.complete:
            return
        res = Residents(plan.cfg, list(range(len(plan.names))), plan.labels, plan.datas, plan.revisions)
        for e in track(rec.endpoints, len(rec.endpoints), "endpoints", "model", not progress):
            rec.endpoint(res.endpoint(e))
        for p in track(rec.pairs, len(rec.pairs), "pairs", "pair", not progress):
            rec.pair(res.pair(p, rec.end_losses(p)))
        for q in track(rec.planes, len(rec.planes), "planes", "plane", not progress):
            rec.plane(res.plane(q))
