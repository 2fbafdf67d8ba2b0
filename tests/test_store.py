import os

import numpy as np
import pyarrow.dataset as ds
import pytest

from lmc_ray.config import ConfigError
from lmc_ray.storage.store import Store, endpoint_table, metrics_from_endpoint, pair_table

LAYOUT = [("nli", ["all", "gold_label=neutral"]), ("hans", ["all"])]


def _metrics(seed):
    rng = np.random.default_rng(seed)
    return [np.column_stack([[10, 4], rng.random((2, 4))]), np.array([[5, *rng.random(4)]])]


def test_pair_rows_and_endpoint_round_trip(tmp_path):
    store = Store(str(tmp_path / "s"))
    store.open({"models": ["a", "b"]})
    ends = _metrics(0)
    store.write_endpoint(0, endpoint_table("a", LAYOUT, ends))
    for got, want in zip(metrics_from_endpoint(store.read_endpoints()[0], LAYOUT), ends):
        np.testing.assert_array_equal(got, want)
    store.write_pair(0, 1, pair_table("a", "b", LAYOUT, {0.0: ends, 0.5: _metrics(1), 1.0: _metrics(2)}))
    t = store.curves().to_table().to_pandas()
    assert len(t) == 3 * 3 and set(t.alpha) == {0.0, 0.5, 1.0}
    assert t[(t.alpha == 0.5) & (t.eval_set == "hans")].n_examples.item() == 5
    assert store.done_pairs() == {(0, 1)} and store.done_endpoints() == {0}


def test_a_write_killed_midway_is_invisible_and_cleaned(tmp_path):
    """A process writing a large pair file is SIGKILLed while the bytes go to disk: readers see only the pairs
    written before, and the next writer to open the store removes the partial file."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "s"
    store = Store(str(root))
    store.open({"x": 1})
    store.write_pair(0, 1, pair_table("a", "b", LAYOUT, {0.5: _metrics(1)}))
    store.close()
    # 400 MB of incompressible bytes through the store's own put(): long enough on disk to be caught mid-way.
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os
from lmc_ray.storage.store import Store
store = Store({str(root)!r})
store.open({{"x": 1}})
store.put("curves/pair-00002-00003.parquet", os.urandom(400 * 2**20))
"""])
    part, deadline = None, time.monotonic() + 120
    while part is None and writer.poll() is None and time.monotonic() < deadline:  # the file the bytes go to
        part = next((f for f in root.rglob("*") if f.is_file() and f.stat().st_size > 2**20), None)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert part is not None and writer.returncode == -signal.SIGKILL, "the write was not caught in flight"
    assert sorted(f.name for f in (root / "curves").iterdir()) == ["pair-00000-00001.parquet"]
    assert Store(str(root)).done_pairs() == {(0, 1)}
    assert len(ds.dataset(str(root / "curves")).to_table()) == 3
    Store(str(root)).open({"x": 1})
    assert not part.exists()


def test_a_store_refuses_another_configuration(tmp_path):
    Store(str(tmp_path / "s")).open({"models": ["a", "b"], "alphas": [0, 1]})
    with pytest.raises(ConfigError, match=r"different configuration \(alphas differ\)"):
        Store(str(tmp_path / "s")).open({"models": ["a", "b"], "alphas": [0, 0.5, 1]})
    # A key only one side has (adaptive α's `refine` is in the fingerprint only when used) is named too.
    Store(str(tmp_path / "r")).open({"alphas": [0, 1], "refine": 2})
    with pytest.raises(ConfigError, match=r"different configuration \(refine differ\)"):
        Store(str(tmp_path / "r")).open({"alphas": [0, 1]})
    # Adapters on a base whose weights changed: every stored value is another line's.
    Store(str(tmp_path / "a")).open({"alphas": [0, 1], "base": "org/base", "base_weights": "abc"})
    Store(str(tmp_path / "a")).open({"alphas": [0, 1], "base": "moved/base", "base_weights": "abc"})
    with pytest.raises(ConfigError, match=r"different configuration \(base_weights differ\)"):
        Store(str(tmp_path / "a")).open({"alphas": [0, 1], "base": "org/base", "base_weights": "def"})


def test_unwritable_store_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"store '.*file/s': not writable"):
        Store(str(tmp_path / "file" / "s")).open({"x": 1})


def test_per_example_files_are_rewritten_with_a_pair_that_did_not_finish(tmp_path, population):
    """A crash after a pair's per-example file but before its curve file (the done marker): the rerun
    computes the pair again and both files end as an uninterrupted run writes them."""
    import pandas as pd

    from lmc_ray import config
    from lmc_ray.execution import local, plan
    from lmc_ray.execution.plan import Pair
    from lmc_ray.execution.recorder import Recorder
    from conftest import sweep_config

    cfg = config.from_dict(sweep_config(population[:3], tmp_path / "store", per_example=True))
    local.run(plan.prepare(cfg), progress=False)
    store = tmp_path / "store"
    first = pd.read_parquet(store / "examples" / "curves" / "pair-00000-00002.parquet")
    (store / "curves" / "pair-00000-00002.parquet").unlink()
    (store / "examples" / "curves" / "pair-00000-00002.parquet").write_bytes(b"half a file")
    p = plan.prepare(cfg)
    with Recorder(p) as rec:
        assert rec.pairs == [Pair(0, 2)]
    local.run(p, progress=False)
    again = pd.read_parquet(store / "examples" / "curves" / "pair-00000-00002.parquet")
    pd.testing.assert_frame_equal(again, first)
    assert len(list((store / "curves").iterdir())) == 3


def test_pairs_stored_before_distances_existed_read_as_null(tmp_path):
    """A store resumed across the version that added `distance`: old pair files lack the column."""
    store = Store(str(tmp_path / "s"))
    store.open({"x": 1})
    old = pair_table("a", "b", LAYOUT, {0.5: _metrics(1)}).drop(["distance"])
    store.put_table(Store.pair_file(0, 1), old)
    store.write_pair(0, 2, pair_table("a", "c", LAYOUT, {0.5: _metrics(2)}, distance=3.5))
    t = store.curves().to_table().to_pandas()
    assert t[t.model_b == "b"].distance.isna().all() and (t[t.model_b == "c"].distance == 3.5).all()
    store.close()


def test_a_store_whose_run_json_is_gone_is_refused_not_reidentified(tmp_path, population):
    """Its pairs might be of other models, another order or selection: nothing tells, so nothing is reused."""
    from lmc_ray import config
    from lmc_ray.execution import local, plan

    from conftest import sweep_config

    local.run(plan.prepare(config.from_dict(sweep_config(population[:3], tmp_path / "s", alphas=3))), progress=False)
    (tmp_path / "s" / "run.json").unlink()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "s").rglob("*"))
    again = config.from_dict(sweep_config([population[1], population[0], population[2]], tmp_path / "s", alphas=3))
    with pytest.raises(ConfigError, match=r"^store '.*/s' holds results but no run.json \(what identifies them\); "
                                          r"restore it or use a new store path$"):
        local.run(plan.prepare(again), progress=False)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "s").rglob("*")) == before  # its lease given up


def _pairs(store, keys):
    """Write pairs (i, j) one by one, as a sweep does; each pair's values from its own seed."""
    for i, j in keys:
        store.write_pair(i, j, pair_table(f"m{i}", f"m{j}", LAYOUT, {0.5: _metrics(1000 * i + j)}))


def test_single_result_files_are_merged_into_batches_and_read_exactly_once(tmp_path):
    """1,029 pairs written one at a time end in one 1,024-pair batch and 5 single files (64 singles merge into a
    batch, 16 batches into one); every pair is read back once, with its own values."""
    from lmc_ray.storage.store import FAN_IN, LEVEL0_FILES

    keys = [(k, k + 1) for k in range(LEVEL0_FILES * FAN_IN + 5)]
    store = Store(str(tmp_path / "s"))
    store.open({"x": 1})
    _pairs(store, keys)
    store.close()
    names = sorted(os.listdir(tmp_path / "s" / "curves"))
    assert len(names) == 6 and sum(n.startswith("batch-") for n in names) == 1, names
    reader = Store(str(tmp_path / "s"))
    assert reader.done_pairs() == set(keys)
    t = reader.curves().to_table().to_pandas()
    assert len(t) == 3 * len(keys) and not t.duplicated(["model_a", "model_b", "eval_set", "subset"]).any()
    want = pair_table("m700", "m701", LAYOUT, {0.5: _metrics(1000 * 700 + 701)}).to_pandas()
    got = t[t.model_a == "m700"].reset_index(drop=True)
    import pandas as pd
    pd.testing.assert_frame_equal(got, want)


def test_a_merge_interrupted_before_its_inputs_are_removed_reads_each_pair_once(tmp_path):
    """The merged file is written before its inputs go: a reader in between, or after a crash there, sees every
    pair once (the batch names the files it replaces), and the next writer removes the replaced files."""
    from lmc_ray.storage.store import LEVEL0_FILES

    keys = [(0, k) for k in range(1, LEVEL0_FILES + 2)]
    store = Store(str(tmp_path / "s"))
    store.open({"x": 1})
    _pairs(store, keys)  # the 64th write merged the first 64; its inputs stay until the next merge
    assert len(os.listdir(tmp_path / "s" / "curves")) == LEVEL0_FILES + 2
    reader = Store(str(tmp_path / "s"))
    assert reader.done_pairs() == set(keys) and len(reader.curves().to_table()) == 3 * len(keys)
    store.lease.release()  # the writer dies here: nothing else removes the replaced files
    again = Store(str(tmp_path / "s"))
    again.open({"x": 1})
    assert len(os.listdir(tmp_path / "s" / "curves")) == 2
    assert again.done_pairs() == set(keys) and len(again.curves().to_table()) == 3 * len(keys)
    again.close()


def test_a_damaged_batch_is_refused_by_readers_and_set_aside_by_the_next_writer(tmp_path):
    from lmc_ray.storage.store import LEVEL0_FILES

    store = Store(str(tmp_path / "s"))
    store.open({"x": 1})
    _pairs(store, [(0, k) for k in range(1, LEVEL0_FILES + 1)])
    store.close()
    batch, = (tmp_path / "s" / "curves").iterdir()
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=rf"^store '.*/s': curves/{batch.name} is damaged \(truncated\); rerun "
                                          r"the sweep, which moves it to _damaged/ and computes its results again$"):
        Store(str(tmp_path / "s")).curves()
    writer = Store(str(tmp_path / "s"))
    writer.open({"x": 1})
    assert writer.done_pairs() == set() and (tmp_path / "s" / "_damaged" / "curves" / batch.name).exists()
    writer.close()


def test_a_truncated_pair_and_an_empty_endpoint_are_computed_again(tmp_path, population):
    """A pair file cut short and an emptied endpoint file are not counted as done: the analysis refuses the store
    in one line naming the file (exit 2), and the sweep sets both aside and computes them again, exactly."""
    import pandas as pd
    import subprocess
    import sys

    from lmc_ray import config
    from lmc_ray.execution import local, plan
    from lmc_ray.compute.work import Endpoint, Pair
    from lmc_ray.execution.recorder import Recorder
    from conftest import sweep_config

    cfg = config.from_dict(sweep_config(population[:3], tmp_path / "s", alphas=3))
    local.run(plan.prepare(cfg), progress=False)
    s = tmp_path / "s"
    key = ["model_a", "model_b", "alpha", "eval_set", "subset"]
    first = pd.read_parquet(s / "curves").sort_values(key).reset_index(drop=True)
    pair = s / "curves" / "pair-00000-00002.parquet"
    pair.write_bytes(pair.read_bytes()[:200])
    (s / "endpoints" / "model-00001.parquet").write_bytes(b"")
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lmc-ray"), "analyse", "--store", str(s)], capture_output=True,
                         text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith(
        "curves/pair-00000-00002.parquet is damaged (truncated); rerun the sweep, which moves it to _damaged/ and "
        "computes its results again"), run.stderr
    p = plan.prepare(cfg)
    with Recorder(p) as rec:
        assert rec.pairs == [Pair(0, 2)] and rec.endpoints == [Endpoint(1)]
    assert sorted(os.listdir(s / "_damaged" / "curves")) == ["pair-00000-00002.parquet"]
    local.run(p, progress=False)
    again = pd.read_parquet(s / "curves").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, first)


def test_a_stored_pair_whose_per_example_file_is_damaged_is_computed_again(tmp_path, population):
    import pandas as pd

    from lmc_ray import config
    from lmc_ray.execution import local, plan
    from lmc_ray.execution.plan import Pair
    from lmc_ray.execution.recorder import Recorder
    from conftest import sweep_config

    cfg = config.from_dict(sweep_config(population[:3], tmp_path / "s", per_example=True, alphas=3))
    local.run(plan.prepare(cfg), progress=False)
    s = tmp_path / "s"
    key = ["model_a", "model_b", "alpha", "eval_set", "subset"]
    curves = pd.read_parquet(s / "curves").sort_values(key).reset_index(drop=True)
    kept = s / "examples" / "curves" / "pair-00000-00001.parquet"
    examples = pd.read_parquet(kept)
    kept.write_bytes(kept.read_bytes()[:-10])
    p = plan.prepare(cfg)
    with Recorder(p) as rec:
        assert rec.pairs == [Pair(0, 1)]
    assert not (s / "curves" / "pair-00000-00001.parquet").exists()  # forgotten with it: one is useless alone
    local.run(p, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(s / "curves").sort_values(key).reset_index(drop=True), curves)
    pd.testing.assert_frame_equal(pd.read_parquet(kept), examples)
