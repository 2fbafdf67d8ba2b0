"""Run a Plan in this process, without Ray: the compute core alone (benchmarks, small runs, debugging)."""
from __future__ import annotations

from tqdm.auto import tqdm

from .plan import Plan
from .residents import Residents


def run(plan: Plan, progress: bool = True) -> None:
    n = len(plan.names)
    res = Residents(plan.cfg, list(range(n)), plan.labels, plan.datas)
    missing = plan.missing_endpoints()
    ends = plan.gather_endpoints((i, res.endpoint(i)) for i in tqdm(missing, desc="endpoints", disable=not progress))
    for a, b in tqdm(plan.pending, desc="pairs", disable=not progress):
        plan.record_pair(a, b, res.curve(a, b, plan.cfg.alphas), ends)
