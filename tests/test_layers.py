"""The package's layers run one way: a module imports only from its own layer or those below it."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmc_ray"
# Bottom to top. Within a layer modules may import each other; `testing` serves the tests and sits on top.
LAYERS = [
    ("errors", "progress", "config"),
    ("compute",),
    ("storage",),
    ("execution",),
    ("analysis",),
    ("training",),
    ("demo", "cli", "__init__", "testing"),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
NO_RAY = ("errors", "progress", "config", "compute", "storage")  # a Ray actor only wraps them (execution/)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _imports(path: Path, parts: tuple[str, ...]):
    """Every module `path` imports, anywhere in it (lazy imports inside functions count): (lmc_ray part, line)."""
    package = ["lmc_ray", *parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # `from . import x`: x is a module, or a name the package defines
                    names = [f"{names[0]}.{a.name}" if _is_module(f"{names[0]}.{a.name}") else names[0]
                             for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            yield name, node.lineno


def _is_module(dotted: str) -> bool:
    at = PACKAGE.parent.joinpath(*dotted.split("."))
    return at.with_suffix(".py").is_file() or (at / "__init__.py").is_file()


def _layer(dotted: str) -> str:
    """The layer of an lmc_ray module: lmc_ray.compute.core -> compute, lmc_ray itself -> __init__."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("path, parts", list(_modules()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_no_module_imports_a_layer_above_its_own(path, parts):
    mine = parts[0]
    assert mine in RANK, f"lmc_ray/{'/'.join(parts)}.py is in no layer: add it to LAYERS"
    upward = [f"line {line}: {name}" for name, line in _imports(path, parts)
              if name.startswith("lmc_ray") and RANK[_layer(name)] > RANK[mine]]
    assert not upward, f"lmc_ray/{'/'.join(parts)}.py ({mine}) imports a higher layer: {upward}"
    if mine in NO_RAY:
        ray = [f"line {line}: {name}" for name, line in _imports(path, parts) if name.split(".")[0] == "ray"]
        assert not ray, f"lmc_ray/{'/'.join(parts)}.py imports Ray: {ray}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "core.py"
    bad.write_text("from ..analysis.barriers import paper\nfrom ..execution import plan\nimport ray\n")
    found = [name for name, _ in _imports(bad, ("compute", "core"))]
    assert found == ["lmc_ray.analysis.barriers", "lmc_ray.execution", "ray"]
    assert [RANK[_layer(name)] > RANK["compute"] for name in found[:2]] == [True, True]
