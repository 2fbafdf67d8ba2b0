"""Shared fixtures: a tiny real population, real MNLI text, one real local Ray instance per session."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pandas as pd
import pytest

from lmc_ray.testing.s3 import moto_server

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MNLI = DATA / "mnli" / "dev_matched.tsv"
NLI_LABELS = ["entailment", "neutral", "contradiction"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (the CI variable, which .ci/run sets) a skipped test is a failed one: what a test needs (Chromium,
    sshd, root) is CI's to provide, so a missing prerequisite can never pass silently there."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped under CI, which must run every test: {reason}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mnli_texts() -> list[str]:
    df = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=3000)
    return list(df.premise) + list(df.hypothesis)


@pytest.fixture(scope="session")
def population(tmp_path_factory, mnli_texts) -> list[Path]:
    """Four tiny BERT classifiers: one random base plus a seeded perturbation each."""
    from lmc_ray.testing.population import make_population

    return make_population(tmp_path_factory.mktemp("pop"), 4, mnli_texts, NLI_LABELS, layers=2, hidden=32,
                           heads=2, noise=0.05, vocab_size=1500)


@pytest.fixture(scope="session")
def short_population(tmp_path_factory, mnli_texts) -> list[Path]:
    """Two tiny BERTs of 128 positions: a model that cannot take the paper's 512 tokens."""
    from lmc_ray.testing.population import make_population

    return make_population(tmp_path_factory.mktemp("short"), 2, mnli_texts, NLI_LABELS, layers=1, hidden=32,
                           heads=2, noise=0.05, vocab_size=1500, positions=128)


def sweep_config(models, store, **over) -> dict:
    """The README's minimal config form, on real MNLI dev text."""
    cfg = {
        "models": [str(m) for m in models],
        "eval_sets": [{"name": "nli", "path": str(MNLI), "text": ["premise", "hypothesis"], "label": "gold_label",
                       "max_examples": 64}],
        "alphas": 5,
        "store": str(store),
        "cache_dir": str(Path(store).parent / "cache"),
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's server mode) on loopback; credentials through the usual AWS env."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """Started after the S3 endpoint so its workers inherit the AWS environment, as on a real cluster."""
    import ray

    # "local": a new instance, never one that a `ray start` on this machine left behind.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def fake_gpu_cluster(tmp_path, max_workers: int):
    """Ray's fake autoscaling cluster on this machine: a head with no GPU, a worker type advertising one (fake)
    GPU, none running. Yields (env, address) for a job to run against it; its processes end with the block.
    The wheel lacks fake_multi_node/example.yaml, the base config AutoscalingCluster reads: this is it, written
    out; AutoscalingCluster.start() itself is not used, as it runs `ray stop --force` (every Ray on the machine)."""
    import signal
    import subprocess
    import sys
    import tempfile

    import psutil
    import ray
    import yaml


    root = tempfile.mkdtemp(prefix="fk", dir="/tmp")  # short: Ray's socket paths live under it
    ip = ray.util.get_node_ip_address()
    port = free_port()
    autoscaler = {
        "cluster_name": "lmcray-fake", "max_workers": max_workers, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"{ip}:{port}"},
        "auth": {"ssh_user": "ubuntu"}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": max_workers}},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}
    # Where `ray up` leaves the autoscaler's config on a head: the driver reads the cluster's limits from it.
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(autoscaler))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_TMPDIR": root,
           "RAY_AUTH_MODE": "disabled", "HOME": str(home)}  # loopback only, torn down with the test
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                        f"--temp-dir={root}/ray", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
                        f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
                        "--disable-usage-stats", f"--autoscaling-config={home / 'ray_bootstrap_config.yaml'}"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield env, f"{ip}:{port}", root
    finally:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any(root in part for part in proc.info["cmdline"] or []):
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
        shutil.rmtree(root, ignore_errors=True)
