"""The one writer of a sweep's store: opens it, says what is left to do, and writes each result as it arrives.

Opening checks the store's identity against the plan (the fingerprint of the settings that decide the values,
and each model's pinned weights) and takes its lease (lease.py), so two sweeps never write one store and a
changed checkpoint is never mixed into old lines. A result's per-example file goes first and its metrics file
last: the metrics file marks the work item done, so a killed run resumes exactly where it stopped.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import Interrupted
from ..execution.plan import Endpoint, EndpointResult, Pair, PairResult, Plan
from .store import Store, endpoint_examples, endpoint_table, metrics_from_endpoint, pair_examples, pair_table

log = logging.getLogger("lmc_ray")


class Recorder:
    def __init__(self, plan: Plan):
        cfg = plan.cfg
        self.plan = plan
        self.store = Store(cfg.store, cfg.storage_options)
        self.store.open(cfg.fingerprint(), dict(zip(plan.names, plan.revisions)), cfg.lease_timeout)
        done = self.store.done_pairs()
        self.pairs: list[Pair] = [p for p in plan.pairs if p not in done]  # still to compute
        stored = self.store.done_endpoints()
        self.endpoints: list[Endpoint] = [e for e in plan.endpoints if e.model not in stored]
        if done:
            log.info("store %s: %d pairs already stored, %d to compute", cfg.store, len(done), len(self.pairs))
        self._ends: dict[int, EndpointResult] = {}
        self._sets = [d.name for d in plan.datas]
        self._subsets = [(d.name, d.subsets) for d in plan.datas]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind, error, tb) -> None:
        """The lease is given up whatever happened; Ctrl-C becomes one line saying what is stored."""
        self.store.close()
        if kind is KeyboardInterrupt:
            raise Interrupted(f"interrupted: {len(self.store.done_pairs())} of {len(self.plan.pairs)} pairs are "
                              f"stored in {self.plan.cfg.store}; rerun the same command to resume") from None

    @property
    def complete(self) -> bool:
        return not self.pairs and not self.endpoints

    def endpoint(self, result: EndpointResult) -> None:
        i = result.model
        if result.examples is not None:
            self.store.write_endpoint(i, endpoint_examples(self.plan.names[i], self._sets, result.examples),
                                      examples=True)
        self.store.write_endpoint(i, endpoint_table(self.plan.names[i], self._subsets, result.metrics))
        self._ends[i] = result

    def ends(self) -> dict[int, EndpointResult]:
        """Every model alone: this run's results, and earlier runs' read back from the store."""
        for i in range(len(self.plan.names)):
            if i not in self._ends:
                metrics = metrics_from_endpoint(self.store.read_endpoint(i), self._subsets)
                self._ends[i] = EndpointResult(i, metrics, None)
        return self._ends

    def end_losses(self, pair: Pair) -> tuple[float, float]:
        ends = self.ends()
        return ends[pair.a].loss, ends[pair.b].loss

    def pair(self, result: PairResult) -> None:
        (a, b), line, on = result.pair, result.line, self.plan.on_line
        names, ends = self.plan.names, self.ends()
        if line.examples is not None:
            sets = [self._sets[k] for k in on]
            self.store.write_pair(a, b, pair_examples(names[a], names[b], sets, line.examples), examples=True)
        curve: dict[float, list[np.ndarray]] = dict(line.interior)
        if 0.0 in self.plan.cfg.alphas:
            curve[0.0] = [ends[a].metrics[k] for k in on]
        if 1.0 in self.plan.cfg.alphas:
            curve[1.0] = [ends[b].metrics[k] for k in on]
        self.store.write_pair(a, b, pair_table(names[a], names[b], [self._subsets[k] for k in on], curve,
                                               line.distance))
