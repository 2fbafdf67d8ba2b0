"""The one writer of a sweep's store: opens it, says what is left to do, and writes each result as it arrives.

Opening checks the store's identity against the plan component by component (the settings every value shares,
each model's pinned weights, each eval set's selection; store.Registry) and takes its lease (storage/lease.py), so two
sweeps never write one store and a changed checkpoint is never mixed into old lines. A store grows: models and
eval sets it lacks are added, and only their work is left — new pairs and endpoints, new sets on stored pairs.
A result's per-example file goes first and its metrics file last: the metrics file marks the work item done, so
a killed run resumes exactly where it stopped.
"""
from __future__ import annotations

import logging

import numpy as np

from ..compute.metrics import LOSS
from ..errors import Interrupted
from ..compute.work import Endpoint, EndpointResult, Pair, PairResult, Plane, PlaneResult
from ..storage.store import (Store, endpoint_examples, endpoint_table, metrics_from_endpoint, pair_examples,
                             pair_table, plane_table)
from .plan import Plan

log = logging.getLogger("lmc_ray")


class Recorder:
    def __init__(self, plan: Plan):
        cfg = plan.cfg
        self.plan = plan
        self.store = Store(cfg.store, cfg.storage_options)
        fingerprint = cfg.fingerprint()
        if plan.base_revision:  # adapters: every value depends on their base's weights too
            fingerprint["base_weights"] = plan.base_revision
        models = [{"name": m.name, "ref": m.ref, "labels": m.labels, "weights": r, "head": h}
                  for m, r, h in zip(cfg.models, plan.revisions, plan.heads)]
        registry = self.store.open(fingerprint, models, fingerprint["eval_sets"], cfg.lease_timeout,
                                   {"ood": cfg.ood} if cfg.ood else None)
        self.index = [registry.index(n) for n in plan.names]  # config model -> store index (its file names)
        self.group = [registry.group(e.name) for e in cfg.eval_sets]  # config eval set -> its files' group
        self._sets = [d.name for d in plan.datas]
        self._subsets = [(d.name, d.subsets) for d in plan.datas]
        self._ends: dict[tuple[int, int], np.ndarray] = {}  # (config model, config eval set) -> metrics rows
        self._stored_ends: dict[int, dict] = {}  # group -> store index -> endpoint rows an earlier run stored
        every, line = tuple(range(len(self.group))), tuple(plan.on_line)
        # One listing per eval-set group, not one per model or pair (4,950 listings of an S3 store otherwise).
        ends = {g: {i for (i,) in self._done("endpoints", g)} for g in set(self.group)}
        self.endpoints: list[Endpoint] = []  # still to compute, each on the sets its model lacks
        for e in plan.endpoints:
            lacks = self._lacking(every, lambda g, i=e.model: self.index[i] in ends[g])
            if lacks:
                self.endpoints.append(Endpoint(e.model, () if lacks == every else lacks))
        done = {g: self._done("curves", g) for g in {self.group[k] for k in line}}
        self.pairs: list[Pair] = []  # still to compute, each on the line sets its pair lacks
        for p in plan.pairs:
            lacks = self._lacking(line, lambda g, p=p: self._key(p) in done[g])
            if lacks:
                self.pairs.append(Pair(p.a, p.b, () if lacks == line else lacks))
        self.planes: list[Plane] = [q for q in plan.planes if not self.store.has(self._plane_file(q))]
        stored = len(plan.pairs) - len(self.pairs)
        if stored or len(self.pairs) < len(plan.pairs):
            log.info("store %s: %d pairs already stored, %d to compute", cfg.store, stored, len(self.pairs))

    def _done(self, sub: str, group: int) -> set:
        """Results of `group` stored whole: with per-example values kept, a result whose per-example file is
        missing or damaged is forgotten and computed again."""
        done = self.store.stored(sub, group)
        bad = self.store.unexamined(sub, done, group) if self.plan.cfg.per_example else set()
        if bad:
            self.store.forget(sub, bad, group)
        return done - bad

    def _lacking(self, sets: tuple[int, ...], stored) -> tuple[int, ...]:
        """Of `sets`, those whose group has no file yet (`stored(group)` says whether it has)."""
        has = {g: stored(g) for g in {self.group[k] for k in sets}}
        return tuple(k for k in sets if not has[self.group[k]])

    def _key(self, pair: Pair) -> tuple[int, int]:
        return tuple(sorted((self.index[pair.a], self.index[pair.b])))

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind, error, tb) -> None:
        """The lease is given up whatever happened; Ctrl-C becomes one line saying what is stored."""
        self.store.close()
        if kind is KeyboardInterrupt:
            groups = {self.group[k] for k in self.plan.on_line}
            done = set.intersection(*(self.store.done_pairs(g) for g in groups)) if groups else set()
            stored = sum(self._key(p) in done for p in self.plan.pairs)
            raise Interrupted(f"interrupted: {stored} of {len(self.plan.pairs)} pairs are stored in "
                              f"{self.plan.cfg.store}; rerun the same command to resume") from None

    @property
    def complete(self) -> bool:
        return not self.pairs and not self.endpoints and not self.planes

    def _plane_file(self, q: Plane) -> str:
        return Store.plane_file(*(self.index[m] for m in q), self.plan.cfg.planes.grid, self.plan.cfg.planes.margin)

    def plane(self, result: PlaneResult) -> None:
        on = self.plan.on_line
        names = tuple(self.plan.names[m] for m in result.plane)
        self.store.put_table(self._plane_file(result.plane),
                             plane_table(names, [self._subsets[k] for k in on], result.points, result.metrics))

    def _by_group(self, sets: tuple[int, ...]):
        """(group, positions in `sets`, config indices) for each group among `sets`: one file each."""
        for g in sorted({self.group[k] for k in sets}):
            at = [n for n, k in enumerate(sets) if self.group[k] == g]
            yield g, at, [sets[n] for n in at]

    def endpoint(self, result: EndpointResult) -> None:
        i = result.model
        name, si = self.plan.names[i], self.index[i]
        for g, at, ks in self._by_group(result.sets):
            if result.examples is not None:
                self.store.write_endpoint(si, endpoint_examples(name, [self._sets[k] for k in ks],
                                                                [result.examples[n] for n in at]), True, g)
            self.store.write_endpoint(si, endpoint_table(name, [self._subsets[k] for k in ks],
                                                         [result.metrics[n] for n in at]), group=g)
        self._ends.update({(i, k): m for k, m in zip(result.sets, result.metrics)})

    def _end(self, i: int, k: int) -> np.ndarray:
        """Model i alone on eval set k: this run's result, or an earlier run's read back from the store."""
        if (i, k) not in self._ends:
            g = self.group[k]
            if g not in self._stored_ends:  # every model's, from one read per file
                self._stored_ends[g] = self.store.read_endpoints(g)
            ks = [j for j, h in enumerate(self.group) if h == g]
            table = self._stored_ends[g][self.index[i]]
            self._ends.update({(i, j): m for j, m in
                               zip(ks, metrics_from_endpoint(table, [self._subsets[j] for j in ks]))})
        return self._ends[(i, k)]

    def end_losses(self, pair: Pair) -> tuple[float, float]:
        """Each model's loss alone on the first eval set: what adaptive α refines by."""
        return float(self._end(pair.a, 0)[0, LOSS]), float(self._end(pair.b, 0)[0, LOSS])

    def pair(self, result: PairResult) -> None:
        a, b = result.pair.a, result.pair.b
        line, names, alphas = result.line, self.plan.names, self.plan.cfg.alphas
        key = self._key(result.pair)
        for g, at, ks in self._by_group(result.sets):
            if line.examples is not None:
                by_alpha = {al: [ex[n] for n in at] for al, ex in line.examples.items()}
                self.store.write_pair(*key, pair_examples(names[a], names[b], [self._sets[k] for k in ks], by_alpha),
                                      True, g)
            curve = {al: [m[n] for n in at] for al, m in line.interior.items()}
            if 0.0 in alphas:
                curve[0.0] = [self._end(a, k) for k in ks]
            if 1.0 in alphas:
                curve[1.0] = [self._end(b, k) for k in ks]
            self.store.write_pair(*key, pair_table(names[a], names[b], [self._subsets[k] for k in ks], curve,
                                                   line.distance), group=g)
