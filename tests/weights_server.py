"""A small HTTP server on 127.0.0.1 for the download tests: serves bytes by path, honours ``Range: bytes=N-``,
can drop the connection after N bytes (once per path), answers 404 for unknown paths, and emulates the Hugging Face
``/{repo}/resolve/{revision}/{file}`` endpoint (X-Repo-Commit + ETag headers). Every request is logged."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection is dropped (once)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def do_GET(self) -> None:
                server._answer(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def _answer(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = h.path.split("?")[0]
        rng = h.headers.get("Range")
        self.requests.append((h.command, path, rng))
        data = self.files.get(path)
        if data is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) and rng:
            h.send_response(416)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if "/resolve/" in path:
            h.send_header("X-Repo-Commit", HUB_COMMIT)
            h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.end_headers()
        if not body:
            return
        cut = self.drop_after.pop(path, None) if h.command == "GET" else None
        if cut is not None:  # promise everything, send part, hang up
            h.wfile.write(data[start:cut])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data[start:])

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
