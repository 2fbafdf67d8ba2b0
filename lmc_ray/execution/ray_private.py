"""Ray's private APIs, fenced: the only module that imports them, each with a fallback for a Ray that moved it.

pyproject.toml pins the Ray versions this was checked with; tests/test_ray_private.py checks that nothing else
imports them and that each function takes Ray's own path, and tests/test_ray_sweep.py and tests/test_cli.py use
them (the loopback test, a stale cluster address, the fake autoscaling cluster's limits).
"""
from __future__ import annotations

import contextlib
import os

# The logger of Ray's notice that token authentication is on (filtered out of what the user reads).
TOKEN_LOG = "ray._private.authentication.authentication_token_setup"


def address_from_environment() -> str | None:
    """The address Ray would join: RAY_ADDRESS, else the one a `ray start` left on this machine; None or "local"
    for none. Raises ConnectionError for RAY_ADDRESS=auto with no cluster to be found."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # without it only an explicit address is honoured
        return os.environ.get("RAY_ADDRESS") or None
    return get_ray_address_from_environment(None, None)


def address_file() -> str:
    """Where `ray start` writes the address of the cluster it started."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:
        return "/tmp/ray/ray_current_cluster"
    return get_ray_address_file(None)


def max_resources() -> dict[str, float]:
    """The most of each resource the cluster's autoscaler may reach (autoscaler v2 publishes it; Ray 2.x has no
    public getter); empty when it is not published or cannot be read."""
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config() or {}
    except (ImportError, AttributeError):
        return {}


@contextlib.contextmanager
def loopback_only(local: bool):
    """While a Ray instance starts, have it bind every port to loopback when `local`: an instance this process
    starts for itself is joined by nothing else, so none of its ports (GCS, raylet, dashboard, three
    unauthenticated Prometheus endpoints) need to listen beyond loopback (the switch is the one that keeps
    macOS/Windows single-node). Without the switch the instance starts as Ray decides; the listening-socket test
    then fails, which is what says a Ray upgrade moved it."""
    try:
        from ray._private import ray_constants

        was = ray_constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = was and not local
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = was
