"""A real S3-compatible server on loopback (moto's server mode) and a relay that counts what crosses the wire:
for tests and for benchmarks that state S3 request counts."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


@contextlib.contextmanager
def moto_server():
    """Yields the server's URL; credentials and endpoint go to the usual AWS environment variables while it runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    env = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=url)
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in before.items():  # a second server (a test of its own) leaves the first one's settings
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_REQUEST = re.compile(rb"(?:^|\r\n)(GET|PUT|POST|HEAD|DELETE) (/\S*) HTTP/1\.1\r\n")


class S3Relay:
    """A TCP relay on loopback between s3fs and the S3 server that counts the bytes the server sends (what a
    client really downloads, measured on the wire) and lists the requests sent to it, in order (method, path)."""

    def __init__(self, upstream: str):
        self.sent, self.requests, self.host, self.port = 0, [], *upstream.rsplit("//", 1)[1].split(":")
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.host, int(self.port)))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    if count:
                        self.sent += len(data)
                    else:
                        self.requests += [(m.decode(), p.decode()) for m, p in _REQUEST.findall(data)]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.server.close()
