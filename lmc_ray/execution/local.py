"""Run a Plan in this process, without Ray: the compute core alone (benchmarks, small runs, debugging)."""
from __future__ import annotations

import time

from .executor import RunReport
from .plan import Plan, here_on_gpus as on_gpus  # what `dtype: auto` asks: this process's device
from ..progress import track
from .recorder import Recorder
from ..compute.residents import Residents


def run(plan: Plan, progress: bool = True) -> RunReport:
    with Recorder(plan) as rec:
        if rec.complete:
            return RunReport()
        report = RunReport(len(rec.endpoints), len(rec.pairs), len(rec.planes))
        start = time.perf_counter()
        res = Residents(plan.cfg, list(range(len(plan.names))), plan.labels, plan.datas, plan.revisions,
                        plan.base_revision)
        for e in track(rec.endpoints, len(rec.endpoints), "endpoints", "model", not progress):
            rec.endpoint(res.endpoint(e))
        for p in track(rec.pairs, len(rec.pairs), "pairs", "pair", not progress):
            rec.pair(res.pair(p, rec.end_losses(p)))
        for q in track(rec.planes, len(rec.planes), "planes", "plane", not progress):
            rec.plane(res.plane(q))
        report.busy = [time.perf_counter() - start]
        return report
