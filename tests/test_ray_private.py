"""Ray's private APIs are fenced in lmc_ray/execution/ray_private.py, and the Ray pinned is the Ray installed."""
import ast
import re
import tomllib
from importlib.metadata import version
from pathlib import Path


from lmc_ray.execution import ray_private

ROOT = Path(__file__).resolve().parents[1]


def _private_imports(path: Path) -> list[str]:
    """Ray modules with a private component (ray._private, ray.autoscaler._private, ...) that `path` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found += [n for n in names if n.split(".")[0] == "ray" and any(p.startswith("_") for p in n.split("."))]
    return found


def test_only_ray_private_imports_rays_private_modules():
    offenders = {str(p.relative_to(ROOT)): _private_imports(p) for p in (ROOT / "lmc_ray").rglob("*.py")
                 if p.name != "ray_private.py"}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert _private_imports(ROOT / "lmc_ray" / "execution" / "ray_private.py")  # the fence is where they are


def test_the_installed_ray_is_in_the_pinned_range_and_its_private_apis_are_where_the_fence_expects():
    spec = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                if d.startswith("ray["))
    lo, hi = re.search(r">=([\d.]+),<([\d.]+)", spec).groups()
    have = tuple(int(x) for x in version("ray").split(".")[:2])
    assert tuple(map(int, lo.split("."))) <= have < tuple(map(int, hi.split("."))), (spec, version("ray"))
    # Each function takes Ray's own path here, not its fallback.
    from ray._common.utils import get_ray_address_file
    from ray._private import ray_constants
    from ray._private.state import state

    assert ray_private.address_file() == get_ray_address_file(None)
    assert hasattr(state, "get_max_resources_from_cluster_config")
    was = ray_constants.ENABLE_RAY_CLUSTER
    with ray_private.loopback_only(True):
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER == was
