"""One writer per store: a second sweep is refused naming the first, never cleans its files; a dead or silent
holder is taken over. Real processes, a real local filesystem and the real S3 server on loopback."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lmc_ray.errors import ConfigError, SweepError
from lmc_ray.storage.store import Store

# A writer in its own process: opens the store, says so, then writes what it is told on stdin.
HOLDER = """
import sys
from lmc_ray.storage.store import Store
s = Store(sys.argv[1])
s.open({"x": 1}, lease_timeout=float(sys.argv[2]))
print("open", flush=True)
for line in sys.stdin:
    try:
        s.put(line.strip(), b"data")
        print("wrote", flush=True)
    except Exception as e:
        print(type(e).__name__, e, flush=True)
"""


def _holder(url: str, timeout: float = 120.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(timeout)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "open"
    return p


def _tell(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def test_a_second_writer_is_refused_naming_the_first_and_touches_nothing(tmp_path):
    url = str(tmp_path / "s")
    holder = _holder(url)
    try:
        # The holder's write in flight: what the old start-up cleanup of a second sweep deleted.
        inflight = tmp_path / "s" / "_tmp" / "inflight.part"
        inflight.parent.mkdir(exist_ok=True)
        inflight.write_bytes(b"half")
        run_json = (tmp_path / "s" / "run.json").read_bytes()
        with pytest.raises(ConfigError) as e:
            Store(url).open({"x": 2})  # another configuration: refused for the lease, before any comparison
        msg = str(e.value)
        assert f"pid {holder.pid} on " in msg and "being written by another sweep" in msg and "\n" not in msg
        assert "heartbeat" not in msg  # a local lease has none: a lock, held while its holder lives
        assert inflight.read_bytes() == b"half" and (tmp_path / "s" / "run.json").read_bytes() == run_json
        assert _tell(holder, "written/by-holder") == "wrote"
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops a dead holder's lock: the next sweep opens at once and removes what it left.
    store = Store(url)
    store.open({"x": 1})
    assert not inflight.exists() and (tmp_path / "s" / "written" / "by-holder").read_bytes() == b"data"
    store.close()
    assert sorted(os.listdir(tmp_path / "s")) == ["run.json", "written"]  # no lease, no empty _tmp/ left


def test_one_process_shares_its_lease(tmp_path):
    first, second = Store(str(tmp_path / "s")), Store(str(tmp_path / "." / "s") + "/")  # one store, two spellings
    first.open({"x": 1})
    second.open({"x": 1})
    assert first.lease is second.lease


def test_s3_lease_heartbeat_takeover_and_a_writer_that_lost_it(s3_endpoint, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("leases")
    url = "s3://leases/run"
    holder = _holder(url, timeout=2.0)
    try:
        time.sleep(3)  # past the timeout: only the heartbeat keeps the lease fresh
        with pytest.raises(ConfigError, match=f"being written by another sweep, pid {holder.pid} on "):
            Store(url).open({"x": 1}, lease_timeout=2.0)
        # A holder that stops answering (hung, or cut off) goes stale after the timeout and is taken over...
        holder.send_signal(signal.SIGSTOP)
        time.sleep(3)
        taker = Store(url)
        taker.open({"x": 1}, lease_timeout=2.0)
        fs.invalidate_cache()
        assert json.loads(fs.cat_file("leases/run/_lease.json"))["pid"] == os.getpid()
        # ...and when it wakes up, its heartbeat finds the lease gone: it writes nothing more.
        holder.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        reply = _tell(holder, "curves/pair-00000-00001.parquet")
        assert reply.startswith("SweepError") and "another sweep took over its lease" in reply
        fs.invalidate_cache()
        assert not fs.exists("leases/run/curves/pair-00000-00001.parquet")
        taker.close()
        fs.invalidate_cache()
        assert not fs.exists("leases/run/_lease.json")
    finally:
        holder.kill()
        holder.wait()
    # A killed holder on this host is stale at once (its process is gone), without waiting for the timeout.
    holder = _holder(url)
    holder.kill()
    holder.wait()
    store = Store(url)
    store.open({"x": 1})
    store.close()
    # One whose pid is not in this pid namespace (another container on a host of the same name) proves
    # nothing by its absence here: it holds until its heartbeat is older than the timeout.
    fs = s3fs.S3FileSystem()
    fs.pipe_file("leases/run/_lease.json", json.dumps({"owner": "x", "host": socket.gethostname(), "pid": 2 ** 22 - 7,
                                                       "pidns": "pid:[1]", "heartbeat": time.time()}).encode())
    with pytest.raises(ConfigError, match="being written by another sweep, pid 4194297 on "):
        Store(url).open({"x": 1}, lease_timeout=60)


def test_a_writer_whose_lease_was_lost_stops(tmp_path):
    store = Store(str(tmp_path / "s"))
    store.open({"x": 1})
    store.lease.lost = "another sweep took over its lease"
    with pytest.raises(SweepError, match="another sweep took over its lease"):
        store.put("curves/pair-00000-00001.parquet", b"x")
    store.lease.lost = None
    store.close()
