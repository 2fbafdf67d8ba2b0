"""Which actor holds which models, and which pairs each actor computes, in what order. No Ray here.

A pair runs on an actor holding one of its two models: first its owner's (the owner rule splits the
N(N-1)/2 pairs so every model owns about (N-1)/2), then, since actors may hold unequal numbers of models,
pairs move to their other model's actor while that one has at least two fewer, until none can (the queues
then differ by at most 2 pairs for N up to 60 on up to 8 actors: tests/test_schedule.py). An actor's pairs
are grouped by the partner model it lacks, so each partner's weights travel to the actor once, not once
per pair.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ..errors import ConfigError


def assign_models(n_models: int, n_actors: int) -> list[list[int]]:
    """Contiguous blocks of models per actor, sizes differing by at most one."""
    n_actors = max(1, min(n_actors, n_models))
    base, extra = divmod(n_models, n_actors)
    out, start = [], 0
    for k in range(n_actors):
        size = base + (k < extra)
        out.append(list(range(start, start + size)))
        start += size
    return out


def owner(i: int, j: int, n: int) -> int:
    """The model that computes the unordered pair {i, j}."""
    i, j = min(i, j), max(i, j)
    d = j - i
    if 2 * d < n or (2 * d == n and i % 2 == 0):
        return i
    return j


def queues(n_models: int, residents: list[list[int]], pending: set[tuple]) -> list[list[tuple]]:
    """Per actor, its pending pairs (the items given: (a, b, ...) with a < b), ordered so pairs sharing a foreign
    partner are adjacent."""
    actor_of = {m: k for k, ms in enumerate(residents) for m in ms}
    work: list[dict[int, list[tuple[int, int]]]] = [defaultdict(list) for _ in residents]
    pairs = sorted(pending)
    where = [actor_of[owner(p[0], p[1], n_models)] for p in pairs]
    load = [where.count(k) for k in range(len(residents))]
    moved = True
    while moved:
        moved = False
        for p, (a, b, *_) in enumerate(pairs):
            k = where[p]
            alt = actor_of[a] if k == actor_of[b] else actor_of[b]
            if load[k] - load[alt] > 1:
                where[p] = alt
                load[k] -= 1
                load[alt] += 1
                moved = True
    for pair, k in zip(pairs, where):
        a, b = pair[0], pair[1]
        partner = b if actor_of[b] != k else (a if actor_of[a] != k else -1)
        work[k][partner].append(pair)
    return [[p for partner in sorted(w) for p in w[partner]] for w in work]


def all_pairs(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def chosen_pairs(names: list[str], spec) -> list[tuple[int, int]]:
    """The pairs that get a line (a < b, by model index): every one ("all", the paper's), every model against
    each anchor ({anchors: [names]}), or those a file lists, two model names a line ({file: PATH})."""
    if spec == "all":
        return all_pairs(len(names))
    index = {n: i for i, n in enumerate(names)}
    if "anchors" in spec:
        anchors = [index[a] for a in spec["anchors"]]
        return sorted({(min(a, i), max(a, i)) for a in anchors for i in range(len(names)) if i != a})
    path = Path(spec["file"]).expanduser()
    if not path.is_file():
        raise ConfigError(f"config: pairs file {spec['file']!r} does not exist")
    out = set()
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        two = [w for w in re.split(r"[,\t ]+", line.strip()) if w]
        where = f"config: pairs file {spec['file']!r} line {k}"
        if len(two) != 2:
            raise ConfigError(f"{where}: expected two model names, got {line.strip()!r}")
        unknown = [w for w in two if w not in index]
        if unknown:
            raise ConfigError(f"{where}: no model named {unknown[0]!r}")
        if two[0] == two[1]:
            raise ConfigError(f"{where}: a model paired with itself")
        a, b = index[two[0]], index[two[1]]
        out.add((min(a, b), max(a, b)))
    if not out:
        raise ConfigError(f"config: pairs file {spec['file']!r} lists no pair")
    return sorted(out)

