"""The Python API and the installed command: what a researcher uses from a notebook or a shell."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
import yaml

import lmc_ray
from lmc_ray.storage.store import Store

from conftest import ROOT, sweep_config


def test_sweep_and_analyse_from_python_equal_in_process_and_on_ray(ray_local, tmp_path, population):
    """A dict config in this process, and a YAML path on the Ray instance the caller started: same store."""
    local = lmc_ray.sweep(sweep_config(population[:3], tmp_path / "local"), executor="local", progress=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(sweep_config(population[:3], tmp_path / "ray")))
    on_ray = lmc_ray.sweep(str(path), progress=False)
    assert isinstance(local, Store) and isinstance(on_ray, Store)
    a, b = (s.curves().to_table().to_pandas().sort_values(["model_a", "model_b", "alpha", "subset"]) for s in (local, on_ray))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False, atol=1e-6, rtol=0)
    result = lmc_ray.analyse(str(tmp_path / "local"))
    assert len(result.names) == 3 and set(result.barriers.metric) == {"loss", "error"}
    assert (tmp_path / "local" / "barriers.parquet").is_file()
    with pytest.raises(lmc_ray.errors.ConfigError, match="executor 'spark'"):
        lmc_ray.sweep(str(path), executor="spark")


def test_the_readme_python_example_runs_as_a_doctest(tmp_path, monkeypatch):
    """As written: every name it uses is defined in it."""
    import doctest
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the example's mkdtemp() puts its folder
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, globs={}, report=True,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15 and result.failed == 0, result
    (work,) = tmp_path.iterdir()
    assert (work / "store" / "barriers.parquet").is_file() and len(list((work / "models").iterdir())) == 4


def test_models_and_eval_sets_given_as_python_objects(tmp_path, population):
    """In-memory transformers models (with a tokenizer) and a datasets.Dataset eval set give the same curves as
    the same models and rows from files; a second call finds the cached files and resumes; a bad object is one line."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conftest import MNLI

    files = lmc_ray.sweep(sweep_config(population[:3], tmp_path / "files"), executor="local", progress=False)
    rows = pd.read_csv(MNLI, sep="\t", quoting=3, nrows=64)[["premise", "hypothesis", "gold_label"]]
    objects = [{"name": str(p), "model": AutoModelForSequenceClassification.from_pretrained(p),
                "tokenizer": AutoTokenizer.from_pretrained(p)} for p in population[:3]]
    raw = sweep_config([], tmp_path / "objects")
    raw["models"] = objects
    raw["eval_sets"] = [{"name": "nli", "dataset": datasets.Dataset.from_pandas(rows), "text": ["premise", "hypothesis"],
                         "label": "gold_label"}]
    mem = lmc_ray.sweep(raw, executor="local", progress=False)
    a, b = (s.curves().to_table().to_pandas().sort_values(["model_a", "model_b", "alpha", "subset"]).reset_index(drop=True)
            for s in (files, mem))
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6, rtol=0)
    cached = sorted(p.name for p in (tmp_path / "cache" / "in-memory").iterdir())
    assert len(cached) == 4 and sum(n.startswith("model-") for n in cached) == 3
    lmc_ray.sweep(raw, executor="local", progress=False)  # the same objects: the same files, the store resumes
    assert sorted(p.name for p in (tmp_path / "cache" / "in-memory").iterdir()) == cached
    raw["models"] = [{"name": "x", "model": object()}] + objects[1:]
    with pytest.raises(lmc_ray.errors.ConfigError, match="model 'x': an in-memory model must be a transformers model"):
        lmc_ray.sweep(raw, executor="local")


def test_models_given_as_state_dicts_on_a_base(tmp_path, population):
    """A state dict with a base for its architecture (a model reference, or a transformers model) sweeps as the
    checkpoint it came from; one that does not fit its base is one line naming the model."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    files = lmc_ray.sweep(sweep_config(population[:3], tmp_path / "files"), executor="local", progress=False)
    weights = [load_file(str(p / "model.safetensors")) for p in population[:3]]
    raw = sweep_config([], tmp_path / "states")
    raw["models"] = [str(population[0]),
                     {"name": str(population[1]), "state_dict": weights[1], "base": str(population[0])},
                     {"name": str(population[2]), "state_dict": weights[2],
                      "base": AutoModelForSequenceClassification.from_pretrained(population[0])}]
    states = lmc_ray.sweep(raw, executor="local", progress=False)
    a, b = (s.curves().to_table().to_pandas().sort_values(["model_a", "model_b", "alpha", "subset"]).reset_index(drop=True)
            for s in (files, states))
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6, rtol=0)
    raw["store"] = str(tmp_path / "bad")
    raw["models"][1] = {"name": "half", "state_dict": dict(list(weights[1].items())[:5]), "base": str(population[0])}
    with pytest.raises(lmc_ray.errors.ConfigError, match=r"^config: model 'half': the state_dict does not fit its base \(\d+ keys missing"):
        lmc_ray.sweep(raw, executor="local")
    raw["models"][1] = {"name": "nobase", "state_dict": weights[1]}
    with pytest.raises(lmc_ray.errors.ConfigError, match=r"^config: model 'nobase': a state_dict needs a 'base'"):
        lmc_ray.sweep(raw, executor="local")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_runs_the_commands(tmp_path, population):
    """`pip install` of a wheel built from the repo into a fresh venv; run from a folder outside the checkout:
    `lmc-ray configs`, a sweep from a YAML file, `analyse`, and `lmc-ray demo`. (The dependencies come
    from this venv through a .pth line, so no multi-GB reinstall; the package itself only from the wheel.)"""
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], check=True,
                   timeout=600)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, cmd = venv / "bin" / "python", venv / "bin" / "lmc-ray"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))], check=True,
                   timeout=600)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}

    def run(*args, timeout=600):
        out = subprocess.run([str(cmd), *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        return out.stdout + out.stderr

    where = subprocess.run([str(py), "-c", "import lmc_ray; print(lmc_ray.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(site) and str(ROOT) not in where  # the wheel's copy, not the checkout
    assert "mnli " in run("configs") and "offline/mnli" in run("configs")
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(population[:3], work / "store")))
    assert "3 of 3 pairs to compute" in run("sweep", "--config", "sweep.yaml")
    assert "report:" in run("analyse", "--store", "store")
    out = run("demo", "--models", "2", "--workdir", "demo", timeout=900)
    assert "cluster models" in out and (work / "demo" / "store" / "report" / "index.html").is_file()
