"""Real HTTP servers on loopback for the download tests (standard library only).

serve_hub: the Hugging Face Hub's routes for model repos, as huggingface_hub 0.36's snapshot_download /
hf_hub_download call them (repo info, tree, paths-info, HEAD + GET resolve); serve_files: a plain file server
with Range support that can break off its first GET (to test resume). Both record the requests they get."""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "c0ffee0123456789abcdef0123456789abcdef01"   # the one revision every served repo has


class Served(str):
    """The base URL, carrying the server's request log: `requests` is a list of (method, path, Range header)."""
    requests: list


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive, as huggingface_hub's session expects

    def log_message(self, *args):     # quiet: pytest shows failures, not access logs
        pass

    def handle(self):                 # a client hanging up (as downloads that break off do) is no error here
        with contextlib.suppress(ConnectionError):
            super().handle()

    def _record(self):
        self.server.log.append((self.command, self.path, self.headers.get("Range")))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for k, v in {"Content-Length": len(body), **(headers or {})}.items():
            self.send_header(k, str(v))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _range(self, data: bytes, head: bool, extra: dict, drop: int | None = None):
        """Send `data` honouring `Range: bytes=N-` (206 + Content-Range); `drop`: close after that many bytes."""
        total, status, headers = len(data), 200, {"Accept-Ranges": "bytes", **extra}
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and not head:
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total:
                return self._send(416, b"", {"Content-Range": f"bytes */{total}"})
            data, status = data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = len(data)
        if drop is None:
            return self._send(status, data, headers, head)
        self._send(status, b"", headers, head=True)      # announce all of it, send part, hang up
        self.wfile.write(data[:drop])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


class _HubHandler(_Handler):
    API = re.compile(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?")
    RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")

    def _repo(self, repo_id: str, rev: str | None):
        """The repo's files, or None after answering 404 as the Hub does."""
        folder = self.server.repos.get(unquote(repo_id))
        if folder is None:
            self._json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
            return None
        if rev is not None and unquote(rev) not in ("main", COMMIT):
            self._json({"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
            return None
        return _files(folder)

    @staticmethod
    def _entry(path: str, file: Path) -> dict:
        data = file.read_bytes()
        return {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}

    def _tree(self, files: dict[str, Path], under: str, recursive: bool) -> list:
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        out, dirs = [], set()
        for path, file in files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            for i in range(1, len(rest) if recursive else min(2, len(rest))):
                dirs.add(prefix + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                out.append(self._entry(path, file))
        return [{"type": "directory", "path": d, "size": 0, "oid": "0" * 40} for d in sorted(dirs)] + out

    def do_GET(self, head: bool = False):
        self._record()
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        if m := self.API.fullmatch(url.path):
            repo_id, route, rev, sub = m.groups()
            if head:
                return self._send(405, head=True)
            if (files := self._repo(repo_id, rev)) is None:
                return None     # answered 404
            if route in (None, "revision"):
                return self._json({"id": unquote(repo_id), "modelId": unquote(repo_id), "sha": COMMIT, "private": False,
                                   "siblings": [{"rfilename": p} for p in files]})
            if route == "tree":
                recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
                return self._json(self._tree(files, unquote(sub or ""), recursive))
            return self._send(405)
        if m := self.RESOLVE.fullmatch(path):
            repo_id, rev, name = m.groups()
            if (files := self._repo(repo_id, rev)) is None:
                return None
            headers = {"X-Repo-Commit": COMMIT}
            if name not in files:
                return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", **headers}, head)
            data = files[name].read_bytes()
            return self._range(data, head, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', **headers})
        return self._send(404, b"Not found", None, head)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_POST(self):     # paths-info: the metadata of named paths (form or JSON body)
        self._record()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        m = self.API.fullmatch(urlsplit(self.path).path)
        if not m or m.group(2) != "paths-info":
            return self._send(404, b"Not found")
        if (files := self._repo(m.group(1), m.group(3))) is None:
            return None
        wanted = json.loads(body).get("paths", []) if body.startswith("{") else parse_qs(body).get("paths", [])
        wanted = [wanted] if isinstance(wanted, str) else wanted
        out = [self._entry(p, files[p]) for p in wanted if p in files]
        out += [{"type": "directory", "path": p, "size": 0, "oid": "0" * 40} for p in wanted
                if p not in files and any(f.startswith(p.rstrip("/") + "/") for f in files)]
        return self._json(out)


class _FileHandler(_Handler):
    def do_GET(self, head: bool = False):
        self._record()
        file = self.server.folder / unquote(urlsplit(self.path).path).lstrip("/")
        if not file.is_file() or self.server.folder.resolve() not in file.resolve().parents:
            return self._send(404, b"Not found", None, head)
        drop = None
        if not head and self.server.drop_after is not None and not self.server.dropped:
            self.server.dropped, drop = True, self.server.drop_after
        data = file.read_bytes()
        return self._range(data, head, {"Content-Type": "application/octet-stream"}, drop)

    def do_HEAD(self):
        self.do_GET(head=True)


@contextlib.contextmanager
def _serve(handler, **attrs):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.log = []
    for k, v in attrs.items():
        setattr(server, k, v)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = Served(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = server.log
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def serve_hub(repos: dict[str, Path]):
    """A Hub on loopback serving each repo id ("org/name") from a folder; yields its base URL (HF_ENDPOINT)."""
    return _serve(_HubHandler, repos={k: Path(v) for k, v in repos.items()})


def serve_files(folder: Path, drop_after: int | None = None):
    """Serve `folder` over HTTP with Range support; `drop_after`: the first GET hangs up after that many bytes."""
    return _serve(_FileHandler, folder=Path(folder), drop_after=drop_after, dropped=False)
