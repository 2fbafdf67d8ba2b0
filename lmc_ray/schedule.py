"""Which actor holds which models, and which pairs each actor computes, in what order. No Ray here.

Each model i "owns" its pairs with i+1 .. i+(N-1)//2 (mod N), and for even N the pair at distance N/2
once, so every model owns about (N-1)/2 of the N(N-1)/2 unordered pairs and the actor holding it gets a
balanced share. An actor's pairs are grouped by the partner model it lacks, so each partner's weights
travel to the actor once, not once per pair.
"""
from __future__ import annotations

from collections import defaultdict


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
    if 2 * d < n or (2 * d == n and i < n // 2):
        return i
    return j


def plan(n_models: int, residents: list[list[int]], pending: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Per actor, its pending pairs (a < b), ordered so pairs sharing a foreign partner are adjacent."""
    actor_of = {m: k for k, ms in enumerate(residents) for m in ms}
    work: list[dict[int, list[tuple[int, int]]]] = [defaultdict(list) for _ in residents]
    for a, b in sorted(pending):
        k = actor_of[owner(a, b, n_models)]
        partner = b if actor_of[b] != k else (a if actor_of[a] != k else -1)
        work[k][partner].append((a, b))
    return [[p for partner in sorted(w) for p in w[partner]] for w in work]


def all_pairs(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def partners(pairs: list[tuple[int, int]], residents: list[int]) -> set[int]:
    """Models an actor needs from elsewhere for these pairs."""
    mine = set(residents)
    return {m for p in pairs for m in p if m not in mine}
