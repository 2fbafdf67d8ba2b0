"""Model sources and the store on s3:// through s3fs, against a real S3 server on loopback."""
import os

import pandas as pd
import pyarrow.dataset as ds
import s3fs

from lmc_ray import config
from lmc_ray.execution import plan, ray_sweep
from lmc_ray.compute import sources
from lmc_ray.execution.plan import Pair
from lmc_ray.execution.recorder import Recorder

from conftest import sweep_config
from lmc_ray.testing.s3 import S3Relay


def _upload(fs, local_dir, url):
    for f in os.listdir(local_dir):
        fs.put_file(os.path.join(local_dir, f), f"{url}/{f}")


def _by_index(df, names):
    df = df.assign(a=df.model_a.map(names.index), b=df.model_b.map(names.index))
    return df.sort_values(["a", "b", "alpha"])


def test_sweep_with_s3_models_and_s3_store(ray_local, s3_endpoint, tmp_path, population):
    fs = s3fs.S3FileSystem()
    fs.mkdir("models")
    fs.mkdir("results")
    _upload(fs, population[0], "models/pop/m0")
    _upload(fs, population[1], "models/pop/m1")
    models = ["s3://models/pop/m0", "s3://models/pop/m1", str(population[2])]
    cfg = config.from_dict(sweep_config(models, "s3://results/run1", actors=2, cache_dir=str(tmp_path / "cache")))
    ray_sweep.run(plan.prepare(cfg), progress=False)
    keys = sorted(os.path.basename(k) for k in fs.ls("results/run1/curves"))
    assert keys == ["pair-00000-00001.parquet", "pair-00000-00002.parquet", "pair-00001-00002.parquet"]
    table = ds.dataset("results/run1/curves", filesystem=fs, format="parquet").to_table().to_pandas()
    assert len(table) == 3 * 5 and set(table.model_a) == {"s3://models/pop/m0", "s3://models/pop/m1"}

    # The same models read from local disk give the same numbers: s3 is only transport.
    local_cfg = config.from_dict(sweep_config(population[:3], tmp_path / "local", actors=2))
    ray_sweep.run(plan.prepare(local_cfg), progress=False)
    want = _by_index(pd.read_parquet(tmp_path / "local" / "curves"), [str(p) for p in population[:3]])
    got = _by_index(table, models)
    assert (abs(got.loss.to_numpy() - want.loss.to_numpy()) < 1e-6).all()

    # Resume on S3: only the missing pair is written again.
    fs.rm("results/run1/curves/pair-00000-00002.parquet")
    before = {k: fs.info(k)["LastModified"] for k in fs.ls("results/run1/curves")}
    p = plan.prepare(config.from_dict(sweep_config(models, "s3://results/run1", actors=2,
                                                   cache_dir=str(tmp_path / "cache"))))
    with Recorder(p) as rec:
        assert rec.pairs == [Pair(0, 2)] and not rec.endpoints
    ray_sweep.run(p, progress=False)
    fs.invalidate_cache()
    after = {k: fs.info(k)["LastModified"] for k in fs.ls("results/run1/curves")}
    assert len(after) == 3 and all(after[k] == v for k, v in before.items())


def test_s3_model_cache_refetches_a_changed_checkpoint(s3_endpoint, tmp_path, population):
    fs = s3fs.S3FileSystem()
    fs.mkdir("cachetest")
    _upload(fs, population[0], "cachetest/m")
    first = sources.resolve("s3://cachetest/m", str(tmp_path))
    assert sources.resolve("s3://cachetest/m", str(tmp_path)) == first  # cached
    fs.put_file(str(population[1] / "model.safetensors"), "cachetest/m/model.safetensors")
    second = sources.resolve("s3://cachetest/m", str(tmp_path))
    assert second != first
    assert (second / "model.safetensors").read_bytes() == (population[1] / "model.safetensors").read_bytes()


def test_an_interrupted_upload_is_invisible_and_aborted_on_reopen(s3_endpoint, tmp_path):
    """SIGKILL a process in the middle of a multipart upload of a pair file to the real S3 server."""
    import signal
    import subprocess
    import sys
    import time

    from lmc_ray.storage.store import Store

    fs = s3fs.S3FileSystem()
    fs.mkdir("interrupted")
    Store("s3://interrupted/run").open({"x": 1})
    writer = subprocess.Popen([sys.executable, "-c", (
        "from lmc_ray.storage.store import Store; s = Store('s3://interrupted/run'); "
        "s.put('curves/pair-00000-00001.parquet', b'P' * (400 << 20))")])
    try:
        deadline = time.time() + 120
        while not fs.list_multipart_uploads("interrupted") and time.time() < deadline:
            time.sleep(0.05)
        assert fs.list_multipart_uploads("interrupted"), "the upload never started"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    fs.invalidate_cache()
    assert not fs.exists("interrupted/run/curves/pair-00000-00001.parquet")
    reopened = Store("s3://interrupted/run")
    assert reopened.done_pairs() == set()
    reopened.open({"x": 1})  # the next run (the lease holder) aborts the unfinished upload
    assert fs.list_multipart_uploads("interrupted") == []
    reopened.close()


def test_a_key_that_climbs_out_of_the_cache_refuses_the_model(s3_endpoint, tmp_path, population):
    """A bucket used as a model source is not trusted: `models/m0/../../../../tmp/x` must not write /tmp/x."""
    import boto3
    import pytest
    import uuid

    fs = s3fs.S3FileSystem()
    fs.mkdir("evil")
    _upload(fs, population[0], "evil/m0")
    victim = tmp_path / "outside" / f"x-{uuid.uuid4().hex}"
    key = "m0/" + "../" * 12 + str(victim).lstrip("/")  # enough `..` to reach / from any cache depth
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket="evil", Key=key, Body=b"pwned")
    assert any(".." in k for k in fs.find("evil/m0"))  # the server kept the key as written
    cache = tmp_path / "cache"
    with pytest.raises(config.ConfigError) as e:
        sources.resolve("s3://evil/m0", str(cache))
    assert "would be written outside the cache" in str(e.value) and "'s3://evil/m0'" in str(e.value)
    assert not victim.exists() and not (tmp_path / "outside").exists()
    assert not [p for p in (cache / "s3").iterdir()]  # no half cache left either


def test_the_driver_reads_headers_only_and_pins_each_s3_model(s3_endpoint, tmp_path, mnli_texts):
    """Preflight of an S3 population moves config, tokenizer and safetensors headers, not weights; the store pins
    each model's listing (ETags); a model overwritten upstream is refused on resume, naming it."""
    import json

    import pytest

    from lmc_ray.testing.population import make_population

    # Big enough that a header is a small part of a checkpoint (a BERT-base header is ~20 KB of 440 MB).
    pop = make_population(tmp_path / "pop", 3, mnli_texts, ["entailment", "neutral", "contradiction"], layers=2,
                          hidden=256, heads=2, vocab_size=1500)
    fs = s3fs.S3FileSystem()
    fs.mkdir("pinned")
    for k, p in enumerate(pop):
        _upload(fs, p, f"pinned/m{k}")
    weights = sum(os.path.getsize(p / "model.safetensors") for p in pop)
    proxy = S3Relay(s3_endpoint)
    try:
        raw = sweep_config([f"s3://pinned/m{k}" for k in range(3)], tmp_path / "store",
                           cache_dir=str(tmp_path / "cache"), storage_options={"endpoint_url": proxy.url})
        p = plan.prepare(config.from_dict(raw))
        with Recorder(p):  # the store opened and each model pinned, nothing computed
            pass
        moved = proxy.sent
    finally:
        proxy.close()
    small = sum(os.path.getsize(f) for f in pop[0].iterdir() if f.suffix != ".safetensors") * 3
    assert moved < small + 0.05 * weights, (moved, small, weights)  # weights: 3 x ~4 MB; headers: a few KB
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # no checkpoint reached the driver's disk
    pinned = json.loads((tmp_path / "store" / "run.json").read_text())["weights"]
    assert list(pinned.values()) == p.revisions and all(r.startswith("s3:") for r in p.revisions)

    # Overwritten in the bucket between two runs: refused on resume, naming the model.
    fs.put_file(str(pop[0] / "model.safetensors"), "pinned/m2/model.safetensors")
    fs.invalidate_cache()
    with pytest.raises(config.ConfigError, match="model 's3://pinned/m2' changed since the store was written"):
        Recorder(plan.prepare(config.from_dict(raw | {"storage_options": {}})))
    # Overwritten after the sweep pinned it, before an actor loads it: the actor refuses the other weights.
    with pytest.raises(config.ConfigError, match="model 's3://pinned/m2': its weights changed after the sweep pinned"):
        sources.resolve("s3://pinned/m2", str(tmp_path / "cache"), revision=p.revisions[2])


def test_analyse_on_s3_writes_and_names_s3_paths(s3_endpoint, tmp_path, population):
    """The analysis of an S3 store, into the store and into another S3 prefix: the report path it prints is a
    URL the user can open with the same tools (s3://...)."""
    import subprocess
    import sys

    from lmc_ray.execution import local

    from conftest import ROOT

    s3fs.S3FileSystem().mkdir("analysed")
    local.run(plan.prepare(config.from_dict(sweep_config(population[:4], "s3://analysed/run", alphas=3))),
              progress=False)
    for out in ([], ["--out", "s3://analysed/elsewhere"]):
        run = subprocess.run([sys.executable, str(ROOT / "jobs" / "analyse.py"), "--store", "s3://analysed/run", *out],
                             capture_output=True, text=True, timeout=300)
        where = out[1] if out else "s3://analysed/run"
        assert run.returncode == 0 and f"report: {where}/report/index.html" in run.stdout, run.stderr[-2000:]
        fs = s3fs.S3FileSystem()
        assert fs.exists(f"{where}/report/index.html") and fs.exists(f"{where}/barriers.parquet")
