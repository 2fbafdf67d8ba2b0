import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, sweep_config

RAY = str(Path(sys.executable).parent / "ray")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(cfg))  # raises on a schema error
    assert any("pip install" in c for c in cfg["setup_commands"])
    # `ray submit` runs jobs/sweep.py from the head's home: the configs must be there.
    assert any(dst.rstrip("/").endswith("configs") and src == "./configs" for dst, src in cfg["file_mounts"].items())


def test_cloud_cluster_autoscales_gpu_workers():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    worker = cfg["available_node_types"]["gpu_worker"]
    assert worker["node_config"]["InstanceType"].startswith("g") and worker["min_workers"] == 0
    assert cfg["provider"]["type"] == "aws"


def test_onprem_cluster_uses_the_local_provider():
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    assert cfg["provider"]["type"] == "local" and cfg["provider"]["worker_ips"]


def _ssh_to_self(root: Path) -> dict:
    """Key-only ssh into this machine without opening a port or touching the system's sshd: ssh's
    ProxyCommand runs sshd in inetd mode (-i) per connection. SetEnv gives the sessions a home of their own,
    so what the launcher writes to ~ (file mounts, bootstrap config, ~/.bashrc) stays in the test's folder."""
    home = root / "home"
    home.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "user")], check=True)
    (root / "sshd_config").write_text(
        f"HostKey {root / 'host'}\nAuthorizedKeysFile {root / 'user.pub'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSetEnv HOME={home}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    return {"ssh_user": getpass.getuser(), "ssh_private_key": str(root / "user"),
            "ssh_proxy_command": f"{SSHD} -i -f {root / 'sshd_config'}"}


def _stop_session_of(marker: str) -> None:
    """Stop the Ray head `ray up` started, and only it: every process of the ssh session whose gcs_server
    runs under `marker` (`ray down` would run `ray stop`, which stops every Ray on this machine)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "sid=,args="], capture_output=True, text=True).stdout.splitlines()
    sids = {line.split()[0] for line in ps if "gcs_server" in line and marker in line}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for sid in sids:
            subprocess.run(["pkill", f"-{sig.value}", "-s", sid])
        time.sleep(5)


@pytest.mark.slow
def test_ray_up_and_submit_drive_this_machine_over_ssh(tmp_path, mnli_texts):
    """cluster-onprem.yaml with the launcher's local provider, head = this machine reached over ssh:
    `ray up` syncs the file mounts, runs the setup and start commands; `ray submit` runs jobs/sweep.py on the
    head, which joins the launched cluster and fills the store."""
    missing = [t for t in ("ssh", "ssh-keygen", "rsync") if not shutil.which(t)] + ([] if Path(SSHD).exists() else ["sshd"])
    if missing or os.geteuid() != 0:
        why = f"needs root and {', '.join(missing) or 'ssh'} (apt-get install openssh-server rsync; .ci/run does)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    from lmc_ray.store import Store
    from lmc_ray.synthetic import make_population

    root = Path(tempfile.mkdtemp(prefix="rayup", dir="/tmp"))  # short: Ray's socket paths live under it
    ports = {k: free_port() for k in ("gcs", "dashboard", "agent", "metrics", "client")}
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    cfg["cluster_name"] = f"lmcray-test-{root.name}"
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["min_workers"] = cfg["max_workers"] = 0
    cfg["auth"] = _ssh_to_self(root)
    # The shipped setup creates ~/lmc-ray-venv and pip-installs the project into it; here that venv is the
    # one running this test (a fresh install would fetch a CUDA torch), the other setup lines run as shipped.
    assert "lmc-ray-venv" in cfg["setup_commands"][0]
    cfg["setup_commands"][0] = f"ln -sfn {sys.prefix} ~/lmc-ray-venv"
    cfg["setup_commands"].append(f"echo 'export RAY_ADDRESS=127.0.0.1:{ports['gcs']}' >> ~/.bashrc")
    # Own ports and temp dir, and no `ray stop`: other Ray instances on this machine keep running.
    cfg["head_start_ray_commands"] = [
        f"ray start --head --port={ports['gcs']} --temp-dir={root / 'ray'} --dashboard-port={ports['dashboard']} "
        f"--dashboard-agent-listen-port={ports['agent']} --metrics-export-port={ports['metrics']} "
        f"--ray-client-server-port={ports['client']} --num-cpus=2 --disable-usage-stats "
        "--autoscaling-config=~/ray_bootstrap_config.yaml"]
    cluster = root / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(cfg))
    models = make_population(tmp_path / "pop", 4, mnli_texts, ["entailment", "neutral", "contradiction"], layers=2,
                             hidden=32, heads=2, vocab_size=1500)
    store = tmp_path / "store"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(models, store)))
    try:
        up = subprocess.run([RAY, "up", "-y", "--no-config-cache", str(cluster)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        home = root / "home"
        assert (home / "lmc-ray" / "jobs" / "sweep.py").is_file() and (home / "configs" / "mnli.yaml").is_file()
        assert not (home / "lmc-ray" / ".venv").exists()  # rsync_exclude honoured
        assert (home / "ray_bootstrap_config.yaml").is_file()

        sub = subprocess.run([RAY, "submit", str(cluster), "jobs/sweep.py", "--", "--config", str(tmp_path / "sweep.yaml")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = sub.stdout + sub.stderr
        assert sub.returncode == 0, out[-3000:]
        assert f"Ray dashboard: 127.0.0.1:{ports['dashboard']}" in out  # the driver joined the launched head
        assert "6 of 6 pairs to compute" in out
        curves = Store(str(store)).curves().to_table().to_pandas()
        assert curves.groupby(["model_a", "model_b"]).alpha.nunique().tolist() == [5] * 6
        assert curves.loss.notna().all() and (curves.loss > 0).all()
    finally:
        _stop_session_of(str(root))
        shutil.rmtree(root, ignore_errors=True)
