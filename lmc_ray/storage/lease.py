"""One writer per store: a lease held while a sweep writes, so two sweeps never share (or clean) a store.

A local store is locked with flock on STORE/_lease.json: the kernel releases it when its process dies, so a
killed sweep never blocks the next one. An S3 store has no locks: the lease is an object created with a
conditional PUT (If-None-Match), renewed by a heartbeat (If-Match on its own last ETag, so a writer that lost
it notices), and stale when its heartbeat is older than `timeout` seconds or its process is gone from this
host; a stale lease is taken over with If-Match on the stale ETag, so of two contenders one wins.

A process is one writer: opening the same store again in the same process shares its lease.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import uuid

from ..errors import ConfigError, SweepError

log = logging.getLogger("lmc_ray")
_OWNER = uuid.uuid4().hex  # this process
_held: dict[str, Lease] = {}


def acquire(fs, path: str, url: str, timeout: float, local: bool) -> Lease:
    """The lease of the store at `url` for this process; ConfigError naming the holder when another has it."""
    lease = _held.get(path)  # the lease file's full path: `run1` and `./run1/` are one store
    if lease is None or lease.released:
        lease = (LocalLease if local else S3Lease)(fs, path, url, timeout)
        lease.acquire()
        _held[path] = lease
        atexit.register(lease.release)
    return lease


def held(path: str) -> bool:
    """Whether this process holds the lease at `path` already (another open of the store shares it)."""
    lease = _held.get(path)
    return lease is not None and not lease.released


def _pid_namespace() -> str | None:
    """Which process-id namespace this process sees (containers on one host each have their own)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _record() -> dict:
    return {"owner": _OWNER, "host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_namespace(),
            "heartbeat": time.time(), "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}


def _gone(info: dict) -> bool:
    """Whether the holder's process provably no longer exists: only when it ran where this process can see it
    (this host and this pid namespace: a container with host networking shares the host name, not the pids)."""
    here = info.get("host") == socket.gethostname() and info.get("pidns") == _pid_namespace() is not None
    return here and not _alive(info.get("pid"))


def _holder(info: dict, beats: bool = True) -> str:
    """Who holds a lease; the heartbeat's age only where there is one (S3): a local lease is a lock the holder
    keeps while it lives, and its file's time is when it was taken."""
    age = time.time() - float(info.get("heartbeat", 0))
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} (since {info.get('since', '?')}"
            + (f", last heartbeat {age:.0f} s ago)" if beats else ")"))


def _busy(url: str, info: dict, beats: bool = True) -> ConfigError:
    return ConfigError(f"store {url!r} is being written by another sweep, {_holder(info, beats)}; wait for it to "
                       "end or stop it (two sweeps never share a store)")


class Lease:
    def __init__(self, fs, path: str, url: str, timeout: float):
        self.fs, self.path, self.url, self.timeout = fs, path, url, timeout
        self.lost: str | None = None  # why, once another writer has taken the store over
        self.released = False

    def check(self) -> None:
        """Called before each write: a writer that lost its lease stops rather than write beside another."""
        if self.lost:
            raise SweepError(f"store {self.url!r}: {self.lost}; stopped writing (rerun to resume once it is free)")


class LocalLease(Lease):
    def acquire(self) -> None:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with os.fdopen(fd) as f:
                    text = f.read()
                raise _busy(self.url, json.loads(text) if text.strip() else {}, beats=False) from None
            # The file may have been removed by the holder's release between our open and our lock.
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_record()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            os.unlink(self.path)  # while still locked, so a newcomer locks a fresh file
        except FileNotFoundError:  # the store was deleted under us (a benchmark's temporary folder): nothing to free
            pass
        os.close(self.fd)


class S3Lease(Lease):
    def _put(self, data: dict, **condition) -> str:
        return self.fs.pipe_file(self.path, json.dumps(data).encode(), **condition)["ETag"]

    def acquire(self) -> None:
        try:
            self.etag = self._put(_record(), IfNoneMatch="*")
        except Exception as e:
            if not _precondition_failed(e):
                raise
            self._take_over_if_stale()
        self.stop = threading.Event()
        self.beat = threading.Thread(target=self._beat, name="lmc-ray-lease", daemon=True)
        self.beat.start()

    def _take_over_if_stale(self) -> None:
        self.fs.invalidate_cache(self.path)
        etag = self.fs.info(self.path)["ETag"]
        info = json.loads(self.fs.cat_file(self.path))
        if not _gone(info) and time.time() - float(info.get("heartbeat", 0)) < self.timeout:
            raise _busy(self.url, info)
        try:
            self.etag = self._put(_record(), IfMatch=etag)
        except Exception as e:
            if _precondition_failed(e):  # another newcomer took it first
                raise _busy(self.url, json.loads(self.fs.cat_file(self.path))) from None
            raise
        log.warning("store %s: took over a stale lease from %s", self.url, _holder(info))

    def _beat(self) -> None:
        while not self.stop.wait(self.timeout / 4):
            try:
                self.etag = self._put(_record(), IfMatch=self.etag)
            except Exception as e:
                if _precondition_failed(e) or isinstance(e, FileNotFoundError):
                    self.lost = "another sweep took over its lease (this one was silent past the lease timeout)"
                    log.warning("store %s: %s", self.url, self.lost)
                    return
                log.warning("store %s: lease heartbeat failed (%s); retrying", self.url, type(e).__name__)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.stop.set()
        # A heartbeat PUT in flight would change the ETag after we read it, and the conditional delete would fail.
        self.beat.join(self.timeout)
        if not self.lost:
            bucket, _, key = self.path.partition("/")
            try:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self.etag)
            except Exception as e:  # it goes stale by itself after the timeout
                log.warning("store %s: lease not removed (%s)", self.url, type(e).__name__)


def _precondition_failed(e: Exception) -> bool:
    """S3's 412 (s3fs raises it as FileExistsError for If-None-Match, a bare OSError for If-Match, so only its
    text tells) or 409 (two conditional writes raced)."""
    return isinstance(e, FileExistsError) or any(s in repr(e) for s in (
        "PreconditionFailed", "pre-conditions you specified did not hold", "ConditionalRequestConflict"))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
