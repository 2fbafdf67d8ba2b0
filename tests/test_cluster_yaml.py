import yaml

from conftest import ROOT


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # raises on a schema error
    assert cfg["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    assert any("pip install" in c for c in cfg["setup_commands"])
