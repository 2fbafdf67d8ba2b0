"""Run a Plan in this process, without Ray: the compute core alone (benchmarks, small runs, debugging)."""
from __future__ import annotations

from tqdm.auto import tqdm

from .plan import Plan
from .residents import Residents


def run(plan: Plan, progress: bool = True) -> None:
    n = len(plan.names)
    res = Residents(plan.cfg, list(range(n)), plan.labels, plan.datas)
    missing = set(plan.missing_endpoints())
    ends = {}
    for i in tqdm(range(n), desc="endpoints", disable=not progress):
        if i in missing:
            ends[i] = res.endpoint(i)
            plan.record_endpoint(i, ends[i])
        else:
            ends[i] = plan.endpoint(i)
    for a, b in tqdm(plan.pending, desc="pairs", disable=not progress):
        plan.record_pair(a, b, res.curve(a, b, plan.cfg.alphas), ends)
