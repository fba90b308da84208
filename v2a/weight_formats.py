"""Is a downloaded file what its manifest entry says it is? Structural proofs that need no published checksum.

``prove(path, fmt)`` returns one line saying what was proven, or raises :class:`FormatError` with one line saying
why the file is not a ``fmt`` file. The proofs read the whole file but never build a tensor or import a class named
in a pickle (the pickles are walked with stand-in classes), so they are safe on untrusted bytes:

- ``torch``: a zip archive (torch >= 1.6) whose every member passes its CRC-32 check, with one ``data.pkl`` whose
  storages all exist with the size the pickle gives them; or a legacy file (magic number, protocol, system info,
  the object, the storage keys, then each storage's element count and bytes) that ends exactly where its last
  storage ends;
- ``safetensors``: an 8-byte header length, a JSON header, tensors whose byte ranges match their dtype and shape,
  follow each other without gaps and end exactly at the end of the file;
- ``json``: parses as JSON;
- ``unknown``: not checked (the caller then needs the transfer or a checksum to prove the file).

An HTML page is never any of these. Only the Python standard library is used (this module is in the floor layer).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path

from v2a.manifest import FORMATS, format_of  # noqa: F401 (re-exported: what an entry declares)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_STORAGE_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                  "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
                  "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4}
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
             "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--")


class FormatError(ValueError):
    """The file is not what its entry says it is; the message is one line."""


def looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def prove(path: str | os.PathLike, fmt: str) -> str:
    """One line saying what ``path`` was proven to be; FormatError when it is not a ``fmt`` file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(64)
    if size == 0:
        raise FormatError("the file is empty")
    if looks_like_html(head):
        raise FormatError(f"the file is an HTML page (starts with {head.lstrip()[:24]!r}), not a {fmt} file")
    if fmt == "torch":
        if zipfile.is_zipfile(path):
            return _torch_zip(path, size)
        if head.startswith(b"PK\x03\x04"):
            raise FormatError("a zip archive without its end-of-archive directory (cut short or overwritten)")
        if head.startswith(b"\x80\x02\x8a\x0a") and int.from_bytes(head[4:14], "little") == _LEGACY_MAGIC:
            return _torch_legacy(path, size)
        raise FormatError(f"neither a torch zip archive nor a legacy torch file (it starts with {head[:16]!r})")
    if fmt == "safetensors":
        return _safetensors(path, size)
    if fmt == "json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"not a JSON file ({err})") from None
        return "JSON parsed"
    return ""


# ------------------------------------------------------------------------------------------ pickles, walked safely


class _Stand:
    """Stands in for every class a checkpoint's pickle names: accepts any construction and any state."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _Walker(pickle.Unpickler):
    """Unpickles without importing anything; records the storages (persistent ids) the pickle refers to."""

    def __init__(self, fh) -> None:
        super().__init__(fh)
        self.storages: dict[str, tuple[str, int]] = {}  # key -> (storage type name, element count)

    def find_class(self, module: str, name: str):
        return type(name, (_Stand,), {"__module__": f"stand-in for {module}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise FormatError(f"the pickle refers to an unexpected persistent id {str(pid)[:60]}")
        self.storages[str(pid[2])] = (getattr(pid[1], "__name__", str(pid[1])), int(pid[4]))
        return None


def _walk(fh, what: str) -> tuple[object, dict[str, tuple[str, int]]]:
    w = _Walker(fh)
    try:
        obj = w.load()
    except FormatError:
        raise
    except Exception as err:  # a truncated or overwritten pickle raises any of several types
        raise FormatError(f"{what} is not a complete pickle ({type(err).__name__}: {str(err)[:80]})") from None
    return obj, w.storages


def _nbytes(type_name: str, count: int) -> int:
    if type_name not in _STORAGE_BYTES:
        raise FormatError(f"unknown storage type {type_name}")
    return _STORAGE_BYTES[type_name] * count


def _torch_zip(path: Path, size: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 22))
        tail = fh.read(22)
    if not (tail.startswith(b"PK\x05\x06") and tail[20:22] == b"\x00\x00"):
        raise FormatError("a zip archive that does not end with its end-of-archive record (bytes after it)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            pkls = [i.filename for i in infos if i.filename.endswith("data.pkl") and i.filename.count("/") == 1]
            if len(pkls) != 1:
                raise FormatError(f"a zip archive but not a torch checkpoint ({len(pkls)} */data.pkl members)")
            bad = zf.testzip()  # reads every member, checks its CRC-32
            if bad is not None:
                raise FormatError(f"torch zip archive member {bad} fails its CRC-32 check")
            prefix = pkls[0][: -len("data.pkl")]
            with zf.open(pkls[0]) as fh:
                _, storages = _walk(fh, pkls[0])
            sizes = {i.filename: i.file_size for i in infos}
            for key, (type_name, count) in storages.items():
                member = f"{prefix}data/{key}"
                if member not in sizes:
                    raise FormatError(f"torch zip archive lacks {member}, which data.pkl refers to")
                if sizes[member] != _nbytes(type_name, count):
                    raise FormatError(f"torch zip archive member {member} has {sizes[member]} bytes, data.pkl "
                                      f"says {count} x {type_name}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
        raise FormatError(f"torch zip archive cannot be read ({type(err).__name__}: {err})") from None
    return f"torch zip archive: {len(infos)} members, CRC-32 checked, {len(storages)} storages as data.pkl says"


def _torch_legacy(path: Path, size: int) -> str:
    with open(path, "rb") as fh:
        magic, _ = _walk(fh, "the magic number")
        if magic != _LEGACY_MAGIC:
            raise FormatError("a legacy torch file with a wrong magic number")
        _walk(fh, "the protocol version")
        _walk(fh, "the system info")
        _, storages = _walk(fh, "the checkpoint object")
        keys, _ = _walk(fh, "the storage key list")
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise FormatError("legacy torch file: the storage key list does not match the object's storages")
        end = fh.tell()
        for key in keys:
            start = fh.tell()
            raw = fh.read(8)
            if len(raw) < 8:
                raise FormatError(f"legacy torch file ends at byte {start}, before storage {key}")
            (count,) = struct.unpack("<q", raw)
            type_name, expected = storages[str(key)]
            if count != expected:
                raise FormatError(f"legacy torch file: storage {key} at byte {start} says {count} elements, the "
                                  f"object says {expected}")
            end = start + 8 + _nbytes(type_name, count)
            if end > size:
                raise FormatError(f"legacy torch file of {size} bytes ends inside storage {key} (which needs up "
                                  f"to byte {end})")
            fh.seek(end)
    if end != size:
        raise FormatError(f"legacy torch file: {size - end} unexpected bytes after its last storage")
    return f"legacy torch file: {len(keys)} storages, ending exactly at byte {size}"


def _safetensors(path: Path, size: int) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 2 <= n <= min(size - 8, 100 << 20):
            raise FormatError(f"not a safetensors file (header length {n} in a file of {size} bytes)")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object")
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            a, b = (int(x) for x in t["data_offsets"])
            want = _ST_BYTES[t["dtype"]] * math.prod(int(d) for d in t["shape"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"safetensors header entry {name!r} is malformed: {str(t)[:80]}") from None
        if b - a != want:
            raise FormatError(f"safetensors tensor {name!r} spans {b - a} bytes, its dtype and shape need {want}")
        spans.append((a, b, name))
    end = 0
    for a, b, name in sorted(spans):
        if a != end:
            raise FormatError(f"safetensors tensor {name!r} starts at {a}, the previous one ends at {end}")
        end = b
    if 8 + n + end != size:
        raise FormatError(f"safetensors file has {size} bytes, its header accounts for {8 + n + end}")
    return f"safetensors: {len(spans)} tensors covering the file exactly"
