"""The cluster path for real: `ray start --head` (dashboard on), `ray job submit`, progress read while it runs.

Ray 2.60 turns on token authentication for `ray start --head`; the CLI clients here run with
RAY_AUTH_MODE=token, as a user's would (docs/cluster.md).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, sweep_config

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head():
    """A Ray head of its own: its own process group, so teardown stops it and nothing else, and its own
    temp dir, so it leaves no /tmp/ray/ray_current_cluster for a later ray.init() to connect to."""
    ports = {k: free_port() for k in ("gcs", "dashboard", "metrics", "agent")}
    temp = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Ray's socket paths live under it
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--temp-dir={temp}", f"--port={ports['gcs']}", f"--dashboard-port={ports['dashboard']}",
         "--dashboard-host=127.0.0.1", f"--metrics-export-port={ports['metrics']}", "--num-cpus=2",
         "--include-dashboard=true", "--disable-usage-stats",
         # Its own agent port: the default (52365) may be taken by another Ray on this machine.
         f"--dashboard-agent-listen-port={ports['agent']}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{ports['dashboard']}"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    deadline = time.time() + 120
    while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
        assert time.time() < deadline and proc.poll() is None, "the Ray head did not come up"
        time.sleep(1)
    yield {"address": address, "env": env, "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics"}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


# One poll = one process reading the job API and the state API (each `ray` CLI call would import Ray anew).
_POLL = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_tasks
address, job = sys.argv[1:]
client = JobSubmissionClient(address)
print(json.dumps({
    "status": str(client.get_job_status(job)), "logs": client.get_job_logs(job),
    "actors": [a.name for a in list_actors(address=address, limit=10000) if a.name],
    "tasks": [t.name for t in list_tasks(address=address, limit=10000)]}))
"""


def _poll(head, job: str) -> dict:
    run = subprocess.run([sys.executable, "-c", _POLL, head["address"], job], env=head["env"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_submitted_sweep_shows_progress_names_and_metrics(head, tmp_path, mnli_texts):
    from lmc_ray.testing.population import make_population

    models = make_population(tmp_path / "pop", 6, mnli_texts, ["entailment", "neutral", "contradiction"], layers=2,
                             hidden=32, heads=2, noise=0.05, vocab_size=1500)
    store = tmp_path / "store"
    cfg = sweep_config([str(m) for m in models], store, alphas=10, actors=2)
    cfg["eval_sets"][0]["max_examples"] = 384
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    submit = [RAY, "job", "submit", "--address", head["address"], "--no-wait", "--working-dir", str(ROOT), "--",
              sys.executable, "jobs/sweep.py", "--config", str(tmp_path / "sweep.yaml")]
    deadline = time.time() + 120
    while True:  # a fresh head accepts jobs once its node agent is up, a few seconds after the dashboard
        run = subprocess.run(submit, env=head["env"], capture_output=True, text=True, timeout=120)
        if run.returncode == 0 or "No available agent" not in run.stderr or time.time() > deadline:
            break
        time.sleep(2)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    job = re.search(r"raysubmit_\w+", out).group(0)

    actors, tasks = set(), set()
    try:
        while True:
            seen = _poll(head, job)
            actors |= set(seen["actors"])
            tasks |= set(seen["tasks"])
            if re.search(r"SUCCEEDED|FAILED|STOPPED", seen["status"]):
                break
            time.sleep(3)
    finally:  # a job still running would outlive the head's process group
        subprocess.run([RAY, "job", "stop", job, "--address", head["address"]], env=head["env"], capture_output=True)
    logs = seen["logs"]
    assert "SUCCEEDED" in seen["status"], logs[-3000:]
    names = [m.name for m in models]  # as the dashboard shows them: no paths
    assert {f"models:{names[0]}..{names[2]} (3)", f"models:{names[3]}..{names[5]} (3)"} <= actors
    assert len({t for t in tasks if t.startswith("pair:")}) == 15 and any(t.startswith("endpoint:") for t in tasks)
    # The bar, as log lines: counts that move, the total, a rate and an ETA.
    progress = [tuple(map(int, m)) for m in re.findall(r"pairs: (\d+)/(\d+)", logs)]
    done = [n for n, total in progress if total == 15]
    assert len(set(done)) >= 2 and done == sorted(done) and done[-1] == 15, progress
    assert re.search(r"pairs: \d+/15 \(\d+%\) [\d.]+ pair/s, elapsed \S+, ETA \S+", logs)
    assert "Ray dashboard: " in logs
    assert len(list((store / "curves").iterdir())) == 15

    # The custom metrics reach the node's Prometheus endpoint (what the dashboard's Metrics view reads).
    deadline, text = time.time() + 60, ""
    while time.time() < deadline and "lmc_ray_actor_busy_seconds" not in text:
        text = urllib.request.urlopen(head["metrics"], timeout=10).read().decode()
        time.sleep(2)
    named = re.findall(r"`(ray_lmc_ray_\w+)`", (ROOT / "docs" / "cluster.md").read_text())  # as the docs name them
    assert len(named) == 4, named
    for name in named:
        assert re.search(rf"^{name}{{", text, re.M), (name, [line for line in text.splitlines() if "lmc_ray" in line])
    from lmc_ray.execution.ray_sweep import run_id

    done_line = next(line for line in text.splitlines()
                     if line.startswith("ray_lmc_ray_pairs_done") and f'run="{run_id(str(store))}"' in line)
    assert float(done_line.rsplit(" ", 1)[1]) == 15
