"""One HTTP download into a ``.part`` file: resumed with a ``Range`` request after a dropped connection, and proven
complete by what the server announced (``Content-Length`` of a 200, ``Content-Range`` of a 206).

A ``.part`` is resumed only when its record (``<file>.part.json``: the URL and the server's ETag or Last-Modified,
written when the download started) says it came from the same URL; the resume sends ``If-Range`` so that a file
changed on the server restarts from byte 0. A ``.part`` of unknown origin (no record, another URL) is never appended
to. What this module cannot trust, it raises as :class:`Refused`; the caller keeps the bytes aside.
"""

from __future__ import annotations

import http.client
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from v2a.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

CHUNK = 1 << 20
OVERLAP = 1 << 16  # bytes a resume asks for again, to check that the server's answer continues the .part
_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


class TransferFailed(RuntimeError):
    """The server could not be reached or answered with an error; nothing was written. One line."""


class Refused(Exception):
    """The server's answer cannot be trusted; ``reason`` is one line. ``body``: the answer's first bytes, to keep
    aside instead of the ``.part`` (which then stays as it was); None: the ``.part`` itself is not trustworthy."""

    def __init__(self, reason: str, body: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason, self.body = reason, body


@dataclass(frozen=True)
class Sent:
    size: int  # bytes in the .part now
    announced: int | None  # the whole file's size as the server announced it; None: not announced

    @property
    def proof(self) -> str | None:
        """One line when the transfer is proven complete by the server's own announcement, else None."""
        if self.announced is None:
            return None
        return f"{self.size} bytes, as the server announced"


def record_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def trusted_start(part: Path, url: str) -> tuple[int, str | None]:
    """(bytes of ``part`` that may be resumed, its validator). Raises Refused for a .part of unknown origin."""
    if not part.exists():
        return 0, None
    rec_path = record_path(part)
    try:
        rec = read_json(rec_path) if rec_path.is_file() else {}
    except ValueError:
        rec = {}
    if not isinstance(rec, dict) or rec.get("url") != url:
        raise Refused(f"{part.name} was left by an earlier download with no record of its URL in {rec_path.name}")
    return part.stat().st_size, rec.get("validator")


def _open(url: str, ask: int | None, validator: str | None, timeout: float):
    """GET ``url``; ``ask``: the first byte wanted (a resume; None: the whole file)."""
    req = urllib.request.Request(url, headers={"User-Agent": "mfm-mapper-weights/1", "Accept-Encoding": "identity"})
    if ask is not None:
        req.add_header("Range", f"bytes={ask}-")
        if validator:
            req.add_header("If-Range", validator)
    return urllib.request.urlopen(req, timeout=timeout)


def _expected(resp, ask: int) -> tuple[int, int | None, int | None]:
    """(first byte of the body, bytes the body should have, the whole file's size) from the answer's headers."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length is not None and length.strip().isdigit() else None
    if resp.status == 206:
        cr = resp.headers.get("Content-Range") or ""
        m = _RANGE.match(cr)
        if not m or int(m.group(1)) != ask:
            raise Refused(f"asked for the file from byte {ask}, the server answered 206 with Content-Range "
                          f"{cr or '(none)'!r}, which does not start there")
        first, last = int(m.group(1)), int(m.group(2))
        total = int(m.group(3)) if m.group(3) != "*" else None
        if length is not None and length != last - first + 1:
            raise Refused(f"the server's Content-Length {length} contradicts its Content-Range {cr!r}")
        return first, last - first + 1, total
    if resp.status != 200:
        raise Refused(f"the server answered HTTP {resp.status} instead of the file")
    return 0, length, length


def _tail(part: Path, n: int) -> bytes:
    with open(part, "rb") as fh:
        fh.seek(-n, 2)
        return fh.read(n)


def _once(name: str, url: str, part: Path, *, progress: bool, timeout: float) -> Sent:
    """Append the rest of ``url`` to ``part`` (or restart it when the server sends the whole file). A resume asks
    for the last ``OVERLAP`` bytes again and compares them with the .part's: a server whose 206 body does not
    continue the partial file (or a .part that is not a prefix of the file) is caught before anything is written."""
    from tqdm import tqdm

    start, validator = trusted_start(part, url)
    overlap = min(start, OVERLAP)
    try:
        resp = _open(url, start - overlap if start else None, validator, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            raise Refused(f"the server cannot send the file from byte {start - overlap} (HTTP 416, Content-Range "
                          f"{err.headers.get('Content-Range') or '(none)'!r}): the partial file is longer than the "
                          "file on the server") from None
        raise TransferFailed(f"HTTP {err.code} {err.reason} for {url}") from None
    except (urllib.error.URLError, OSError) as err:
        raise TransferFailed(f"cannot reach {url} ({getattr(err, 'reason', err)})") from None
    with resp:
        if resp.headers.get_content_type() == "text/html":
            raise Refused(f"the server answered with an HTML page (HTTP {resp.status}, Content-Type text/html), "
                          "not the file", body=resp.read(CHUNK))
        if start and resp.status == 200:
            log.info("%s: the server sent the whole file instead of resuming; starting over", name)
            start = overlap = 0
        first, expect, total = _expected(resp, start - overlap)
        if overlap:
            again = b""
            while len(again) < overlap and (block := resp.read1(overlap - len(again))):
                again += block
            if len(again) < overlap:
                raise ConnectionError(f"connection closed after {first + len(again)} bytes")
            if again != _tail(part, overlap):
                raise Refused(f"the server's answer from byte {first} does not repeat the last {overlap} bytes of "
                              "the partial file: it does not continue it")
        else:
            atomic_write_json(record_path(part), {"url": url, "validator": resp.headers.get("ETag")
                                                  or resp.headers.get("Last-Modified")})
        got = overlap
        with open(part, "ab" if start else "wb") as fh, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                              desc=name, disable=not progress, leave=False) as bar:
            while True:
                block = resp.read1(CHUNK)  # whatever has arrived: a stall longer than `timeout` raises
                if not block:
                    break
                fh.write(block)
                got += len(block)
                bar.update(len(block))
                if expect is not None and got > expect:
                    raise Refused(f"the server sent more than the {expect} bytes it announced")
    if expect is not None and got < expect:
        raise ConnectionError(f"connection closed after {first + got} of {first + expect} bytes")
    return Sent(first + got, total)


def download(name: str, url: str, part: Path, *, progress: bool = True, retries: int = 3,
             timeout: float = 60.0) -> Sent:
    """Download ``url`` into ``part`` (resuming it when it may be); retries resume after a dropped connection or a
    stall of ``timeout`` seconds. Raises TransferFailed (nothing written), Refused (keep something aside) or
    ConnectionError (interrupted after ``retries``; the .part may be resumed later)."""
    for attempt in range(retries + 1):
        try:
            return _once(name, url, part, progress=progress, timeout=timeout)
        except (OSError, http.client.HTTPException) as err:  # a dropped connection, a read timeout
            have = part.stat().st_size if part.exists() else 0
            why = f"no data for {timeout:g} s" if "timed out" in str(err) else str(err) or type(err).__name__
            if attempt == retries:
                raise ConnectionError(f"download from {url} interrupted at {have} bytes ({why})") from None
            log.warning("%s: %s; resuming from byte %d", name, why, have)
    raise AssertionError("unreachable")
