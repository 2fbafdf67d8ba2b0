"""The work a sweep is made of, and what computing it returns: the contract between the plan that lists the work,
the executors that run it (in this process or on Ray actors) and the recorder that stores the results.

Models and eval sets are named by their index in the config, so a work item is a few integers wherever it travels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .evaluate import Examples, Metrics
from .plane import Point


class Endpoint(NamedTuple):
    """Work item: model `model` alone (α = 0 of each of its lines), evaluated once per model, on the eval sets
    `sets` (config indices; empty: all of them; a grown store asks only for the sets it lacks)."""
    model: int
    sets: tuple[int, ...] = ()


class Pair(NamedTuple):
    """Work item: the line between models a < b (indices in config order), on the line sets `sets` (config indices;
    empty: every set on the lines)."""
    a: int
    b: int
    sets: tuple[int, ...] = ()


class Plane(NamedTuple):
    """Work item: the plane through models a, b, c (config indices; a is its origin, see compute/plane.py)."""
    a: int
    b: int
    c: int


@dataclass
class PlaneResult:
    plane: Plane
    points: list[Point]  # the three models, then the grid
    metrics: list[list[Metrics]]  # per point, per line set


@dataclass
class EndpointResult:
    model: int
    sets: tuple[int, ...]  # the eval sets evaluated (config indices)
    metrics: list[Metrics]  # per eval set of `sets`, rows per subset
    examples: list[Examples] | None  # per eval set, when the sweep keeps per-example values


@dataclass
class Line:
    """One pair's line, as the core computed it."""
    interior: dict[float, list[Metrics]]  # α -> metrics per eval set on the lines (endpoints: each model alone)
    examples: dict[float, list[Examples]] | None  # α -> per-example values, when the sweep keeps them
    distance: float  # ‖θ_B − θ_A‖₂ over every floating tensor of the state (the paper logs it per pair)


@dataclass
class PairResult:
    pair: Pair
    sets: tuple[int, ...]  # the line sets evaluated (config indices), the order of the line's metrics
    line: Line
