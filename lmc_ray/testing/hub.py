"""A model hub on loopback for tests: the few HTTP endpoints huggingface_hub calls to list models by tag, list a
repository's commits, describe a revision, list its files and download them (whole, or by byte range for safetensors
headers), served from folders committed to it. With HF_ENDPOINT pointing here the hub path of `compute/sources.py`
runs for real, offline.

Tags are derived as the hub derives them: a model card (README.md) whose front matter names `base_model: BASE` tags
the repository base_model:BASE and base_model:RELATION:BASE, the relation being the card's base_model_relation, else
adapter when the repository holds an adapter_config.json, else finetune.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


class LocalHub:
    def __init__(self):
        self.repos: dict[str, list[dict]] = {}  # repo id -> its commits on main, newest first
        self.downloads: dict[str, int] = {}  # repo id -> the count the listing sorts by (set by a test)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def commit(self, repo: str, folder: Path, title: str, extra: dict[str, bytes] | None = None) -> str:
        """A new commit on main holding exactly the files of `folder` (and `extra`, any name: a hostile hub's
        listing); returns its id."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()} | (extra or {})
        history = self.repos.setdefault(repo, [])
        sha = hashlib.sha1(json.dumps([repo, title, len(history)]).encode()
                           + b"".join(hashlib.sha1(b).digest() for b in files.values())).hexdigest()
        history.insert(0, {"id": sha, "title": title, "files": files})
        return sha

    def tags(self, repo: str) -> list[str]:
        files = self.repos[repo][0]["files"]
        card = files.get("README.md", b"").decode()
        front = yaml.safe_load(card.split("---")[1]) if card.startswith("---") and card.count("---") >= 2 else None
        if not isinstance(front, dict) or not front.get("base_model"):
            return []
        bases = front["base_model"] if isinstance(front["base_model"], list) else [front["base_model"]]
        relation = front.get("base_model_relation") or ("adapter" if "adapter_config.json" in files else "finetune")
        return [t for b in bases for t in (f"base_model:{b}", f"base_model:{relation}:{b}")]

    def listing(self, query: dict[str, list[str]]) -> list[dict]:
        """GET /api/models: the repositories carrying every `filter` tag, most downloaded first, at most `limit`."""
        wanted = set(query.get("filter", []))
        rows = [{"id": r, "modelId": r, "sha": h[0]["id"], "tags": self.tags(r), "downloads": self.downloads.get(r, 0),
                 "likes": 0, "private": False} for r, h in self.repos.items()]
        rows = [row for row in rows if wanted <= set(row["tags"])]
        rows.sort(key=lambda row: -row["downloads"])  # stable: equal counts keep the order repositories were made
        return rows[:int(query["limit"][0])] if "limit" in query else rows

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def find(self, repo: str, revision: str) -> list[dict] | None:
        """The history from `revision` (main, or a commit id) back to the first commit."""
        history = self.repos.get(repo, [])
        at = 0 if revision == "main" and history else next(
            (k for k, c in enumerate(history) if c["id"] == revision), None)
        return None if at is None else history[at:]


_ROUTES = [
    ("commits", re.compile(r"^/api/models/([^/]+/[^/]+)/commits/([^/]+)$")),
    ("tree", re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$")),  # the root, recursive: all files
    ("info", re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")),  # no revision: main
    ("file", re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")),
]


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the test's output is the test's
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.rstrip("/") == "/api/models":
                return self._json(hub.listing(parse_qs(urlsplit(self.path).query)), body)
            for route, pattern in _ROUTES:
                m = pattern.match(path)
                if m:
                    break
            else:
                return self._fail(404, "RepoNotFound", body)
            if m[1] not in hub.repos:
                return self._fail(404, "RepoNotFound", body)
            history = hub.find(m[1], m[2] or "main")
            if history is None:
                return self._fail(404, "RevisionNotFound", body)
            head = history[0]
            if route == "commits":
                return self._json([{"id": c["id"], "title": c["title"], "message": "", "authors": [{"user": "lmcray"}],
                                    "date": "2026-01-01T00:00:00.000Z"} for c in history], body)
            if route == "tree":
                return self._json([{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                   for n, b in head["files"].items()], body)
            if route == "info":
                return self._json({"id": m[1], "sha": head["id"], "siblings": [
                    {"rfilename": n, "size": len(b)} for n, b in head["files"].items()]}, body)
            data = head["files"].get(m[3])
            if data is None:
                return self._fail(404, "EntryNotFound", body)
            status, extra = 200, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}  # the whole file's
            wanted = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
            if wanted and body:
                start = int(wanted[1])
                end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
                status, extra["Content-Range"] = 206, f"bytes {start}-{end}/{len(data)}"
                data = data[start:end + 1]
            self._send(status, data, body, {"X-Repo-Commit": head["id"], **extra})

        def _json(self, obj, body: bool) -> None:
            self._send(200, json.dumps(obj).encode(), body, {"Content-Type": "application/json"})

        def _fail(self, status: int, code: str, body: bool) -> None:
            self._send(status, code.encode(), body, {"X-Error-Code": code})

        def _send(self, status: int, data: bytes, body: bool, headers: dict) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler
