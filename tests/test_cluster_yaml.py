import pytest
import yaml

from conftest import ROOT


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
