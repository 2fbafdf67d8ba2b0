"""The sweep through a real local Ray instance, against the in-process core on the same work."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmc_ray import config
from lmc_ray.execution import local, plan, ray_sweep
from lmc_ray.compute.work import Endpoint, Pair
from lmc_ray.execution.recorder import Recorder
from lmc_ray.storage.store import Store

from conftest import DATA, fake_gpu_cluster, sweep_config
from test_models import permuted_copy

HANS = DATA / "hans" / "heuristics_evaluation_set.regenerated.tsv"


def _two_sets(models, store, **over):
    cfg = sweep_config(models, store, **over)
    cfg["eval_sets"][0]["subsets"] = ["gold_label"]
    cfg["eval_sets"].append({
        "name": "hans", "path": str(HANS), "text": ["sentence1", "sentence2"], "label": "gold_label",
        "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]},
        "subsets": [["heuristic", "gold_label"]], "max_examples": 48, "role": "diagnostic"})
    return config.from_dict(cfg)


def _table(store):
    df = pd.read_parquet(os.path.join(store, "curves"))
    return df.sort_values(["model_a", "model_b", "eval_set", "subset", "alpha"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, population):
    """The whole sweep computed in-process, without Ray."""
    store = tmp_path_factory.mktemp("ref") / "store"
    local.run(plan.prepare(_two_sets(population, store)), progress=False)
    return _table(store)


def test_ray_sweep_is_complete_and_equals_the_core(ray_local, tmp_path, population, reference, caplog):
    import logging

    cfg = _two_sets(population, tmp_path / "store", actors=2)
    with caplog.at_level(logging.INFO, logger="lmc_ray"):
        report = ray_sweep.run(plan.prepare(cfg), progress=False)
    busy = report.busy
    assert (report.endpoints, report.pairs, report.planes) == (len(population), len(cfg.models) * (len(cfg.models) - 1) // 2, 0)
    assert len(busy) == 2 and min(busy) > 0  # each actor computed; the log says how evenly
    assert re.search(r"2 actors busy [\d.]+ to [\d.]+ s \(spread \d+% of the mean\)", caplog.text), caplog.text
    got = _table(cfg.store)
    n, n_alpha = len(population), 5
    subsets = 1 + 3 + 1 + 1  # nli: all + 3 labels; hans: all + the one heuristic,label pair in its first 48 rows
    assert len(got) == n * (n - 1) // 2 * n_alpha * subsets
    assert not got.duplicated(["model_a", "model_b", "alpha", "eval_set", "subset"]).any()
    assert got.groupby(["model_a", "model_b"]).size().nunique() == 1
    pd.testing.assert_frame_equal(got, reference, check_exact=False, atol=1e-6, rtol=0)
    # The endpoints in different pairs are the same single evaluation of each model.
    ends = got[got.alpha == 0.0].groupby(["model_a", "eval_set", "subset"]).loss.nunique()
    assert (ends == 1).all()
    assert {"hans"} <= set(got.eval_set) and got.alpha.dtype == np.float64


def test_adaptive_alpha_through_ray_equals_the_core(ray_local, tmp_path, population):
    stores = {k: tmp_path / k for k in ("core", "ray")}
    local.run(plan.prepare(_two_sets(population, stores["core"], refine=1)), progress=False)
    ray_sweep.run(plan.prepare(_two_sets(population, stores["ray"], refine=1, actors=2)), progress=False)
    got, want = _table(stores["ray"]), _table(stores["core"])
    assert (got.groupby(["model_a", "model_b"]).alpha.nunique() == 5 + 2).all()
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6, rtol=0)


def test_per_example_values_through_ray_equal_the_core(ray_local, tmp_path, population):
    stores = {k: tmp_path / k for k in ("core", "ray")}
    local.run(plan.prepare(_two_sets(population, stores["core"], per_example=True)), progress=False)
    ray_sweep.run(plan.prepare(_two_sets(population, stores["ray"], per_example=True, actors=2)), progress=False)
    for sub, keys in (("curves", ["model_a", "model_b", "alpha"]), ("endpoints", ["model"])):
        got, want = (pd.read_parquet(stores[k] / "examples" / sub).sort_values([*keys, "eval_set", "example"])
                     .reset_index(drop=True) for k in ("ray", "core"))
        assert len(got) == (6 * 3 if sub == "curves" else 4) * (64 + 48)
        pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6, rtol=0)


def test_resume_computes_only_missing_pairs(ray_local, tmp_path, population, reference):
    store = tmp_path / "store"
    cfg = _two_sets(population, store, actors=2)
    ray_sweep.run(plan.prepare(cfg), progress=False)
    curves = store / "curves"
    # An interrupted run: two pairs and one endpoint never written.
    (curves / "pair-00000-00003.parquet").unlink()
    (curves / "pair-00001-00002.parquet").unlink()
    (store / "endpoints" / "model-00002.parquet").unlink()
    before = {f.name: f.stat().st_mtime_ns for f in curves.iterdir()}
    p = plan.prepare(_two_sets(population, store, actors=2))
    with Recorder(p) as rec:
        assert rec.pairs == [Pair(0, 3), Pair(1, 2)] and rec.endpoints == [Endpoint(2)]
    ray_sweep.run(p, progress=False)
    after = {f.name: f.stat().st_mtime_ns for f in curves.iterdir()}
    assert sorted(set(after) - set(before)) == ["pair-00000-00003.parquet", "pair-00001-00002.parquet"]
    assert all(after[k] == v for k, v in before.items())  # nothing recomputed
    pd.testing.assert_frame_equal(_table(store), reference, check_exact=False, atol=1e-6, rtol=0)


def test_one_actor_per_model_and_permuted_labels(ray_local, tmp_path, population, reference):
    """A checkpoint listing its classes in another order gives the same curves once mapped by name."""
    models = list(population)
    models[3] = permuted_copy(population[3], tmp_path / os.path.basename(population[3]), [1, 2, 0])
    shutil.copytree(population[3], tmp_path / "tok", dirs_exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(population[3] / f, models[3] / f)
    cfg = _two_sets(models, tmp_path / "store", actors=4)
    for m, orig in zip(cfg.models, population):
        m.name = str(orig)  # same names as the reference so rows line up
    ray_sweep.run(plan.prepare(cfg), progress=False)
    pd.testing.assert_frame_equal(_table(cfg.store), reference, check_exact=False, atol=1e-6, rtol=0)


def test_nan_weights_found_in_an_actor_fail_in_one_line(ray_local, tmp_path, population):
    from safetensors.torch import load_file, save_file

    from lmc_ray.config import ConfigError

    bad = tmp_path / "nan_model"
    shutil.copytree(population[1], bad)
    state = load_file(bad / "model.safetensors")
    state["classifier.bias"][0] = float("nan")
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    cfg = config.from_dict(sweep_config([population[0], bad], tmp_path / "store", actors=2))
    with pytest.raises(ConfigError) as e:
        ray_sweep.run(plan.prepare(cfg), progress=False)
    assert str(e.value) == f"model '{bad}': parameter 'classifier.bias' contains NaN or inf"
    assert not (tmp_path / "store" / "curves").exists()
    assert not _model_actors(), "a failed sweep left its actors running"


def test_actors_that_never_get_their_gpus_stop_in_one_line(ray_local, tmp_path, population):
    """A GPU asked for on a cluster that has none and cannot add any: the actors wait (said every 30 s), then the
    sweep stops naming the resource; the store keeps what it had and its lease is released."""
    from lmc_ray.errors import SweepError

    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store", device="cpu", gpus_per_actor=1,
                                        resource_timeout=3))
    assert ray_sweep.layout(cfg, 2) == (1, 1.0, 2.0)  # asked for, not found: 1 GPU on a cluster of 0
    with pytest.raises(SweepError) as e:
        ray_sweep.run(plan.prepare(cfg), progress=False)
    msg = str(e.value)
    assert msg.startswith("1 of 1 actors never started in ") and "each needs 1.00 GPU, 2.00 CPU" in msg, msg
    assert "the cluster has 0 GPU, 2 CPU" in msg and "\n" not in msg
    assert not (tmp_path / "store" / "_lease.json").exists() and not (tmp_path / "store" / "curves").exists()
    # The same models on CPUs: auto asks for no GPU at all.
    assert ray_sweep.layout(config.from_dict(sweep_config(population[:2], tmp_path / "s2")), 2)[1] == 0.0


def test_anchor_pairs_only_and_what_the_cluster_job_says(ray_local, tmp_path, population):
    """pairs: {anchors: [...]} sweeps every model against the anchor only (3 of 6 pairs), equal to the same pairs
    of a full sweep; `analyse` writes their barriers and says in one line what it cannot compute."""
    import subprocess
    import sys

    from conftest import ROOT

    cfg = config.from_dict(sweep_config(population, tmp_path / "store", pairs={"anchors": [str(population[1])]}))
    p = plan.prepare(cfg)
    assert p.pairs == [Pair(0, 1), Pair(1, 2), Pair(1, 3)]
    ray_sweep.run(p, progress=False)
    full = config.from_dict(sweep_config(population, tmp_path / "full"))
    local.run(plan.prepare(full), progress=False)
    got, want = _table(str(tmp_path / "store")), _table(str(tmp_path / "full"))
    want = want[want.model_a.eq(str(population[1])) | want.model_b.eq(str(population[1]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6, rtol=0)
    run = subprocess.run([sys.executable, str(ROOT / "jobs" / "analyse.py"), "--store", str(tmp_path / "store")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "barriers of its 3 stored pairs are in barriers.parquet" in run.stdout
    assert len(pd.read_parquet(tmp_path / "store" / "barriers.parquet").groupby(["model_a", "model_b"])) == 3


# -- faults -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_population(tmp_path_factory, mnli_texts):
    """Six models on the paper's 10-point grid: slow enough (a few seconds) to be killed mid-sweep."""
    from lmc_ray.testing.population import make_population

    return make_population(tmp_path_factory.mktemp("slow"), 6, mnli_texts, ["entailment", "neutral", "contradiction"],
                           layers=2, hidden=32, heads=2, noise=0.05, vocab_size=1500)


def _slow_config(models, store, **over):
    cfg = sweep_config(models, store, alphas=10, **{"actors": 2, **over})
    cfg["eval_sets"][0]["max_examples"] = 512
    return cfg


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory, slow_population):
    store = tmp_path_factory.mktemp("slowref") / "store"
    local.run(plan.prepare(config.from_dict(_slow_config(slow_population, store))), progress=False)
    return _table(store)


def _model_actors() -> list[str]:
    """The sweep actors alive in this Ray instance, by name (model:NAME or models:A..B (n))."""
    import ray

    return [n for n in ray.util.list_named_actors() if n.startswith(("model:", "models:"))]


def _actor_processes():
    """ModelActor processes; Ray titles a busy one after its task (ray::pair:a|b, ray::endpoint:m)."""
    import psutil

    titles = ("ray::ModelActor", "ray::pair:", "ray::endpoint:")
    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith(titles)]


def _pairs_stored(store):
    """Pairs in a store while a sweep writes it: not its files, which are merged into batches as it goes, and a
    listing may name a file that a merge has just removed (read again)."""
    import time

    from lmc_ray.errors import ConfigError

    for _ in range(50):
        try:
            return len(Store(str(store)).done_pairs()) if (store / "run.json").exists() else 0
        except ConfigError:
            time.sleep(0.01)
    raise AssertionError(f"{store}: no consistent listing in 50 tries")


def _wait_for_pairs(store, n, timeout=120):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if _pairs_stored(store) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} pairs in {store} after {timeout} s")


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_pairs_retried(ray_local, tmp_path, slow_population, slow_reference,
                                                           caplog):
    import signal
    import threading

    store = tmp_path / "store"
    p = plan.prepare(config.from_dict(_slow_config(slow_population, store)))
    errors = []
    sweep = threading.Thread(target=lambda: _run_catching(p, errors))
    sweep.start()
    _wait_for_pairs(store, 1)
    victim = _actor_processes()[0]
    victim.send_signal(signal.SIGKILL)
    _join(sweep, 300)
    assert not errors, errors
    assert any("died (1 of 3 restarts)" in r.getMessage() for r in caplog.records)
    got = _table(store)
    assert not got.duplicated(["model_a", "model_b", "alpha", "eval_set", "subset"]).any()
    pd.testing.assert_frame_equal(got, slow_reference, check_exact=False, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_partners_weights_lost_in_flight_are_published_again(ray_local, tmp_path, slow_population, slow_reference,
                                                                caplog):
    """Actor 0 computes its own pairs first, then (s0, s3), whose partner weights come from actor 1. Actor 1 is
    stopped (SIGSTOP) while it computes its own first pairs, so the weights request queues behind them; once actor
    0 has stored its own three pairs it is waiting on that request, and actor 1 is killed. The pair's input is lost
    with it: the log shows the pair retried with its partner published again, and the store equals the reference."""
    import signal
    import threading
    import time

    from lmc_ray.execution import schedule

    names = [f"s{k}" for k in range(6)]
    residents = schedule.assign_models(6, 2)
    queue0 = schedule.queues(6, residents, set(schedule.all_pairs(6)))[0]
    assert residents == [[0, 1, 2], [3, 4, 5]] and queue0[:4] == [(0, 1), (0, 2), (1, 2), (0, 3)]  # the premise
    cfg = _slow_config([], tmp_path / "store")
    cfg["models"] = [{"ref": str(p), "name": n} for p, n in zip(slow_population, names)]
    p = plan.prepare(config.from_dict(cfg))
    store = Store(p.cfg.store)
    errors = []
    sweep = threading.Thread(target=lambda: _run_catching(p, errors))
    sweep.start()
    _wait_for_pairs(tmp_path / "store", 1)
    deadline, victim = time.monotonic() + 60, None
    while victim is None and time.monotonic() < deadline:  # actor 1 is the one computing (s3, s4) or (s3, s5)
        victim = next((proc for proc in _actor_processes() if proc.info["cmdline"][0].startswith(
            ("ray::pair:s3|", "ray::pair:s4|"))), None)
    assert victim is not None, "actor 1 was never seen computing its own pairs"
    victim.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 120
        while not {(0, 1), (0, 2), (1, 2)} <= store.done_pairs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {(0, 1), (0, 2), (1, 2)} <= store.done_pairs(), store.done_pairs()
        assert (0, 3) not in store.done_pairs(), "(s0, s3) finished without the stopped actor's weights"
        time.sleep(1.0)  # (s0, s3) is submitted as (s1, s2) is stored, and blocks on the weights request
    finally:
        victim.send_signal(signal.SIGKILL)  # a stopped process dies too
    _join(sweep, 300)
    assert not errors, errors
    lost = [r.getMessage() for r in caplog.records if "lost its input" in r.getMessage()]
    assert any(m.startswith("pair:s0|s3 lost its input") and m.endswith("publishing it again and retrying")
               for m in lost), lost
    ref = slow_reference.replace({str(m): n for m, n in zip(slow_population, names)})
    pd.testing.assert_frame_equal(_table(tmp_path / "store"), ref, check_exact=False, atol=1e-6, rtol=0)


def _run_catching(p, errors):
    try:
        ray_sweep.run(p, progress=False)
    except Exception as e:  # handed to the test thread
        errors.append(e)


def _join(thread, timeout: float) -> None:
    """join() returns on timeout too: a sweep still running after it is a hang, and fails here, not later."""
    thread.join(timeout)
    assert not thread.is_alive(), f"the sweep did not end within {timeout} s"


@pytest.mark.slow
def test_an_actor_that_keeps_dying_ends_the_run_naming_its_models(ray_local, tmp_path, slow_population):
    import signal
    import threading
    import time

    from lmc_ray.errors import SweepError

    p = plan.prepare(config.from_dict(_slow_config(slow_population, tmp_path / "store", max_retries=1)))
    errors = []
    sweep = threading.Thread(target=lambda: _run_catching(p, errors))
    sweep.start()
    deadline = time.monotonic() + 300
    while sweep.is_alive() and time.monotonic() < deadline:  # every incarnation of every actor dies as it appears
        for proc in _actor_processes():
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    _join(sweep, 10)
    assert len(errors) == 1 and isinstance(errors[0], SweepError), errors
    msg = str(errors[0])
    assert re.match(r"actor models?:\S+ .*died 2 times \(max_retries 1\); giving up on its models", msg), msg
    assert "\n" not in msg
    assert not _model_actors(), "a failed sweep left its actors running"


@pytest.mark.slow
def test_a_killed_driver_resumes_to_the_same_store(tmp_path, slow_population, slow_reference):
    """SIGKILL the job (and the local Ray it started) mid-sweep; the same command finishes the store."""
    import signal
    import subprocess
    import sys

    import yaml

    from conftest import ROOT

    store = tmp_path / "store"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_slow_config([str(p) for p in slow_population], store)))
    command = [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config", str(path)]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_pairs(store, 2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {f.name: f.stat().st_mtime_ns for f in (store / "curves").iterdir()}
    assert 2 <= len(before) < 15
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(before)} pairs already stored, {15 - len(before)} to compute" in rerun.stderr
    after = {f.name: f.stat().st_mtime_ns for f in (store / "curves").iterdir()}
    assert len(after) == 15 and all(after[k] == v for k, v in before.items())
    pd.testing.assert_frame_equal(_table(store), slow_reference, check_exact=False, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_thousand_pairs_keep_memory_flat_through_an_actor_restart(ray_local, tmp_path, mnli_texts, caplog):
    """46 small models (1,035 pairs; 0.8 MB of weights each), 8 tasks in flight per actor, one actor killed early
    (at 100 pairs). Once the restarted actor computes again, the actors' own memory (USS: not the object-store
    pages they read) is the same at the end (800-1,030 pairs) as in the 250 pairs after it came back, so a
    model-sized copy kept per pair (~100 MB per actor over that span) cannot pass; a leak in the restarted actor
    shows in full, as both windows follow its restart. The whole process tree (driver, raylet, GCS, agents,
    actors; RSS) is bounded more loosely: its native allocators grow in steps of tens of MiB that are not per
    pair (pytest's own process after the tests before it, Ray's agents)."""
    import signal
    import threading
    import time

    import psutil

    from lmc_ray.testing.memory import PeakRSS
    from lmc_ray.testing.population import make_population

    models = make_population(tmp_path / "pop", 46, mnli_texts, ["entailment", "neutral", "contradiction"], layers=1,
                             hidden=64, heads=2, noise=0.05, vocab_size=2000)
    store = tmp_path / "store"
    cfg = sweep_config(models, store, alphas=3, actors=2, max_in_flight=8)
    cfg["eval_sets"][0]["max_examples"] = 16
    p = plan.prepare(config.from_dict(cfg))
    errors = []

    def probe():
        own, pids = 0, []
        for proc in _actor_processes():
            try:
                own += proc.memory_full_info().uss
                pids.append(proc.pid)
            except psutil.Error:  # gone (the killed one) between listing and reading
                pass
        return _pairs_stored(store), own, tuple(pids)

    with PeakRSS(every=0.25, probe=probe) as mem:
        sweep = threading.Thread(target=lambda: _run_catching(p, errors))
        sweep.start()
        _wait_for_pairs(store, 100, timeout=600)
        victim = _actor_processes()[0]
        survivor = [q.pid for q in _actor_processes() if q.pid != victim.pid]
        killed_at = time.time() - mem.start
        victim.send_signal(signal.SIGKILL)
        _join(sweep, 900)
    assert not errors, errors
    assert len(Store(p.cfg.store).done_pairs()) == 1035
    assert any("died (1 of 3 restarts)" in r.getMessage() for r in caplog.records), "the actor was not restarted"
    rss = pd.DataFrame([(t, tree, *probed) for t, tree, probed in mem.samples],
                       columns=["t", "tree", "pairs", "actors", "pids"])
    # Back: the first sample after the kill that reads two actors, one of them new.
    back = rss[(rss.t > killed_at) & rss.pids.map(lambda ps: len(ps) == 2 and set(ps) != {victim.pid, *survivor})]
    assert len(back), "no restarted actor was seen"
    start = int(back.pairs.iloc[0]) + 50  # its first pairs: still warming up
    assert start + 250 < 800, f"the actor came back only at {start} pairs: no room for two windows"
    early, late = (rss[rss.pairs.between(lo, hi)].median(numeric_only=True) for lo, hi in ((start, start + 250),
                                                                                          (800, 1030)))
    print(f"actor back at {start - 50} pairs; at {start}-{start + 250} / 800-1030 pairs: actors "
          f"{early.actors / 2**20:.0f} / {late.actors / 2**20:.0f} MiB USS, process tree {early.tree / 2**20:.0f} / "
          f"{late.tree / 2**20:.0f} MiB RSS (peak {mem.peak / 2**20:.0f} MiB)")
    assert late.actors - early.actors < 64 * 2**20, (early.actors, late.actors)
    assert late.tree - early.tree < 300 * 2**20, (early.tree, late.tree)


@pytest.mark.slow
def test_gpu_actors_make_the_autoscaler_start_workers(tmp_path, population):
    """A sweep computing on CPUs but asking for GPUs (device cpu, gpus_per_actor 1) sizes its actors from the
    autoscaler's limits, the autoscaler starts workers for them, and the store equals an in-process run."""
    import subprocess
    import sys
    import time

    import yaml

    from conftest import ROOT

    with fake_gpu_cluster(tmp_path, max_workers=2) as (env, address, _):
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(population[:3], tmp_path / "store", alphas=3)))
        start = time.monotonic()
        run = subprocess.run([sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config", str(tmp_path / "sweep.yaml"),
                              "--set", "device=cpu", "--set", "gpus_per_actor=1"],
                             env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        # Sized by what the autoscaler may start (2 workers of 1 GPU), not by what ran at the start (no GPU).
        assert "2 actors for 3 models (1.00 GPU, 2.00 CPU each)" in run.stderr, run.stderr[-3000:]
        status = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"^ *2 gpu_worker$", status, re.M) and "/2.0 GPU" in status, status  # started for the actors
        print(f"fake GPU workers started and the sweep done in {time.monotonic() - start:.0f} s")
    reference = config.from_dict(sweep_config(population[:3], tmp_path / "ref", alphas=3))
    local.run(plan.prepare(reference), progress=False)
    pd.testing.assert_frame_equal(_table(str(tmp_path / "store")), _table(str(tmp_path / "ref")), check_exact=False,
                                  atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_node_that_dies_with_its_actor_is_replaced(tmp_path, slow_population, slow_reference):
    """Mid-sweep, a whole GPU worker (its raylet and every process under it) is SIGKILLed: Ray restarts the actor
    on a node with a free GPU (the autoscaler may start one: room for 3 workers, 2 actors), the lost pairs are
    retried, and the store equals an undisturbed run."""
    import signal
    import subprocess
    import sys

    import psutil
    import yaml

    from conftest import ROOT

    with fake_gpu_cluster(tmp_path, max_workers=3) as (env, address, root):
        store = tmp_path / "store"
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(_slow_config([str(p) for p in slow_population], store)))
        job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config", str(tmp_path / "sweep.yaml"),
                                "--set", "device=cpu", "--set", "gpus_per_actor=1", "--set", "actors=2"],
                               env={**env, "RAY_ADDRESS": address}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            _wait_for_pairs(store, 2, timeout=300)
            workers = [p for p in psutil.process_iter(["cmdline"]) if "raylet" in " ".join(p.info["cmdline"] or [])
                       and root in " ".join(p.info["cmdline"] or []) and "GPU" in " ".join(p.info["cmdline"] or [])]
            assert workers, "no fake GPU worker found"
            for proc in [*workers[0].children(recursive=True), workers[0]]:
                proc.send_signal(signal.SIGKILL)
            _, err = job.communicate(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, err[-3000:]
        assert re.search(r"actor models:.* died \(1 of 3 restarts\)", err), err[-3000:]
    pd.testing.assert_frame_equal(_table(str(store)), slow_reference, check_exact=False, atol=1e-6, rtol=0)


def test_gpu_shares_are_1_over_k_so_every_actor_fits():
    """12 actors on 8 GPUs ask for 1/2 each (8/12 each fit one a GPU: 4 waited forever); every mix of GPUs and
    actors fits, with Ray's resource unit of 1e-4 rounded down."""
    for gpus in range(1, 9):
        for actors in range(1, 41):
            cfg = config.SweepConfig(**{**_MINIMAL, "actors": actors})
            n, share, _ = ray_sweep.layout(cfg, 100, {"GPU": gpus, "CPU": 16})
            per_gpu = int(1 / share + 1e-9)
            assert n == actors and per_gpu * share <= 1 and n <= gpus * per_gpu and (per_gpu - 1) * gpus < n
    cfg = config.SweepConfig(**{**_MINIMAL, "actors": 12})
    assert ray_sweep.layout(cfg, 100, {"GPU": 8, "CPU": 16})[1] == 0.5
    assert ray_sweep.layout(config.SweepConfig(**{**_MINIMAL, "actors": 3}), 100, {"GPU": 1, "CPU": 16})[1] == 0.3333
    auto = config.SweepConfig(**_MINIMAL)  # actors auto: one per GPU, or k per GPU when 1/k is asked for
    assert ray_sweep.layout(auto, 100, {"GPU": 8, "CPU": 16})[:2] == (8, 1.0)
    assert ray_sweep.layout(config.SweepConfig(**{**_MINIMAL, "gpus_per_actor": 0.25}), 100,
                            {"GPU": 8, "CPU": 16})[:2] == (32, 0.25)


_MINIMAL = dict(models=[config.ModelSpec("a", "a"), config.ModelSpec("b", "b")], store="s", device="cuda",
                eval_sets=[config.EvalSetSpec("e", "p", ["t"], "y")])


def test_gpu_shares_that_cannot_fit_are_refused_in_one_line(tmp_path, population):
    for share in (0.3, 1.5, 2):
        with pytest.raises(config.ConfigError) as e:
            config.from_dict(sweep_config(population[:2], tmp_path / "s", gpus_per_actor=share))
        assert str(e.value) == (f"config: gpus_per_actor {share:g}: an actor computes on one GPU, alone (1) or shared "
                                "by k actors (1/k: 0.5, 0.3333, 0.25, ...)")
    config.from_dict(sweep_config(population[:2], tmp_path / "s", gpus_per_actor=0.3333))
    cfg = config.SweepConfig(**{**_MINIMAL, "actors": 12, "gpus_per_actor": 1})
    with pytest.raises(config.ConfigError) as e:
        ray_sweep.layout(cfg, 100, {"GPU": 8, "CPU": 16})
    assert str(e.value) == ("config: actors 12 with gpus_per_actor 1 need 12 GPUs and the cluster has at most 8 "
                            "(set gpus_per_actor auto or 1/2, or actors 8)")


def test_every_actor_of_a_computed_share_starts_on_a_real_ray_with_8_gpus():
    """Ray itself, with 8 (logical) GPUs: the 12 actors of layout()'s share all start within seconds."""
    import subprocess
    import sys

    script = f"""
import ray, time
from lmc_ray import config
from lmc_ray.execution import ray_sweep
import test_ray_sweep as t
ray.init(address="local", num_cpus=1, num_gpus=8, include_dashboard=False, logging_level="ERROR")
n, share, _ = ray_sweep.layout(config.SweepConfig(**{{**t._MINIMAL, "actors": 12}}), 100)
A = ray.remote(num_cpus=0)(type("A", (), {{"pid": lambda self: 1}}))
actors = [A.options(num_gpus=share).remote() for _ in range(n)]
ready, waiting = ray.wait([a.pid.remote() for a in actors], num_returns=n, timeout=30)
print()
print(n, share, len(ready), len(waiting))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).parent)
    assert out.stdout.splitlines()[-1:] == ["12 0.5 12 0"], out.stdout + out.stderr[-2000:]


def test_an_actor_bounds_its_compile_workers_by_its_cores(ray_local, tmp_path, population):
    import ray

    from lmc_ray.execution.ray_sweep import ModelActor

    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store"))
    p = plan.prepare(cfg)
    actor = ModelActor.options(num_cpus=1).remote(cfg, [0], p.labels, p.revisions, None, 1, "probe")
    try:
        threads = ray.get(actor.__ray_call__.remote(
            lambda self: (__import__("torch").get_num_threads(),
                          __import__("torch._inductor.config").__dict__["_inductor"].config.compile_threads)))
        assert threads == (1, 1)
    finally:
        ray.kill(actor)


def test_a_local_ray_instance_listens_on_loopback_only(tmp_path, population):
    """The Ray instance a sweep starts for itself (no cluster to join) is joined by nothing else: every port its
    processes open (GCS, raylet, dashboard, Prometheus endpoints) listens on loopback; and the metrics carry no
    path (a run id instead of the store, actor numbers instead of model paths)."""
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil
    import yaml

    from conftest import ROOT

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_config(population[:3], tmp_path / "store", alphas=10, actors=2)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, metrics = set(), ""
    try:
        me = psutil.Process(proc.pid)
        while proc.poll() is None:
            for p in [me, *me.children(recursive=True)]:
                try:
                    seen |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections("inet")
                             if c.status == psutil.CONN_LISTEN}
                except psutil.Error:
                    pass
            for ip, port, _ in list(seen):  # a Prometheus endpoint answers /metrics; ours appear once a pair is done
                if "lmc_ray_pairs_done" not in metrics and ip.endswith("127.0.0.1"):
                    try:
                        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                        metrics = text if "lmc_ray_" in text else metrics
                    except Exception:  # noqa: BLE001 - not an HTTP port
                        pass
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert len(seen) >= 8, seen  # GCS, raylet, dashboard, agents, metrics: the instance was really watched
    assert {ip for ip, _, _ in seen} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, sorted(seen)
    lines = [line for line in metrics.splitlines() if "lmc_ray_" in line and not line.startswith("#")]
    assert lines and f'run="{ray_sweep.run_id(str(tmp_path / "store"))}"' in metrics, lines
    leaks = [line for line in metrics.splitlines() if str(tmp_path) in line or any(str(m) in line for m in population)]
    assert not leaks, sorted({re.sub(r'="[^"]*"', '', l)[:80] for l in leaks})
