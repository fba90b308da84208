"""A small HTTP server on 127.0.0.1 for the download tests: serves bytes by path, honours ``Range: bytes=N-`` (and
``If-Range`` against its ETag), can drop the connection after N bytes (once per path), answers 404 for unknown paths,
and emulates the Hugging Face ``/{repo}/resolve/{revision}/{file}`` endpoint (X-Repo-Commit + ETag headers). Every
request is logged.

``faults[path]`` makes it misbehave the way real servers and proxies do:

- ``html``: a 200 HTML error page, ``Content-Type: text/html``; ``html_as_binary``: the same page labelled
  ``application/octet-stream``;
- ``cut_unannounced``: a 200 without ``Content-Length`` whose body stops at half the file (connection closed);
- ``206_from_zero``: a Range request answered 206 with ``Content-Range: bytes 0-...`` and the whole file;
- ``206_lying``: a Range request answered 206 with the right ``Content-Range`` but a body that restarts at byte 0;
- ``ignore_range``: a Range request answered 200 with the whole file;
- ``stall``: (once) the first ``stall_bytes`` bytes, then ``stall_seconds`` of silence, then the rest.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection is dropped (once)
        self.faults: dict[str, str] = {}  # path -> one of the misbehaviours of the module docstring
        self.stall_bytes, self.stall_seconds = 1000, 2.0
        self.html = b"<!DOCTYPE html>\n<html><head><title>Error 403</title></head><body>Quota exceeded</body></html>\n"
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
            self._head(h, 404, {"Content-Length": "0"})
            return
        fault = self.faults.get(path)
        if fault in ("html", "html_as_binary"):
            ctype = "text/html; charset=utf-8" if fault == "html" else "application/octet-stream"
            self._head(h, 200, {"Content-Type": ctype, "Content-Length": str(len(self.html))})
            h.wfile.write(self.html if body else b"")
            return
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        if rng and h.headers.get("If-Range") not in (None, etag) or fault == "ignore_range":
            rng = None  # changed since the client's partial copy: the whole file
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) and rng:
            self._head(h, 416, {"Content-Length": "0", "Content-Range": f"bytes */{len(data)}"})
            return
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "application/octet-stream"}
        if "/resolve/" in path:
            headers["X-Repo-Commit"] = HUB_COMMIT
        send = data[start:]
        if start and fault == "206_from_zero":
            headers["Content-Range"], send = f"bytes 0-{len(data) - 1}/{len(data)}", data
        elif rng:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if fault == "206_lying":
                send = data[: len(data) - start]
        if fault == "cut_unannounced":
            headers["Connection"] = "close"
            h.close_connection = True
            send = send[: len(data) // 2]
        else:
            headers["Content-Length"] = str(len(send))
        self._head(h, 206 if rng else 200, headers)
        if not body:
            return
        cut = self.drop_after.pop(path, None) if h.command == "GET" else None
        if cut is not None:  # promise everything, send part, hang up
            h.wfile.write(send[: cut - start])
            h.wfile.flush()
            h.close_connection = True
            return
        if fault == "stall" and h.command == "GET":
            self.faults.pop(path)
            h.wfile.write(send[: self.stall_bytes])
            h.wfile.flush()
            time.sleep(self.stall_seconds)
            send = send[self.stall_bytes:]
        try:
            h.wfile.write(send)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            h.close_connection = True

    @staticmethod
    def _head(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
