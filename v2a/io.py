"""Small I/O helpers shared by every stage: atomic writes, an exclusive lock, safe clip ids, hashing."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$")


def check_clip_id(clip_id: str) -> str:
    """Return ``clip_id`` if it is safe to use as a file name, else raise ``ValueError``.

    Allowed: letters, digits, ``_``, ``-`` and ``.`` (not leading), at most 200 characters.
    Rejects path separators, ``..`` and empty ids so that no id can escape an output folder.
    """
    if not isinstance(clip_id, str) or not _SAFE_ID.match(clip_id) or ".." in clip_id:
        raise ValueError(
            f"clip id {clip_id!r} is not safe to use in a path: use letters, digits, '_', '-' and '.', "
            "no '/', no '..', at most 200 characters"
        )
    return clip_id


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (atomic on POSIX).

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for people to open
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


class InputError(ValueError):
    """A file the user gave (a labels table, an id list, a lock file) cannot be read as what it should be. The message
    is one line naming the file, the line and the value; the CLI reports it as a usage mistake (exit code 2)."""


class LockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str = "this output", *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; refuse with a clear message if taken (or wait, with ``wait``).

    The lock dies with its process (SIGKILL included), so a killed run never leaves a stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LockedError(
                f"{what} is being written by another process (pid {holder}, lock {path}); "
                "wait for it to finish or stop it"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def folder_lock(folder: str | os.PathLike, what: str) -> contextlib.AbstractContextManager:
    """The exclusive lock of a whole output folder, held in ``.<name>.lock`` beside it (not inside): a folder that
    is set aside (renamed) or replaced keeps its lock where the next writer looks for it."""
    folder = Path(folder)
    return exclusive_lock(folder.parent / f".{folder.name}.lock", f"{what} {folder}")


def folder_problem(path: str | os.PathLike, what: str = "a folder", *, writable: bool = True) -> str | None:
    """Why ``path`` cannot be (or become) a folder (``writable``: one this process can write in), one sentence naming
    the path and what was expected; None when it can.

    A file (or a broken link) at ``path`` or at one of its parents, or, with ``writable``, a nearest existing folder
    this process cannot write in. Nothing is created: a check, before anything is written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not {what}; move it away or name another path"
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a broken symbolic link, so {path} cannot be {what}"
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, so {path} cannot be {what} (a folder inside a file); name another path"
    if writable and probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        return (f"{probe} is not writable by this user, so {path} cannot be {what}"
                if probe != path else f"{path} is not writable by this user ({what} is written there)")
    return None


def check_folder(path: str | os.PathLike, what: str = "a folder") -> Path:
    """``path`` when it is or can become a writable folder; else InputError (the CLI: one line, exit code 2)."""
    problem = folder_problem(path, what)
    if problem:
        raise InputError(problem)
    return Path(path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))


def file_identity(path: str | os.PathLike) -> dict:
    """Cheap identity of a file: resolved path, size and mtime (no full read of multi-GB checkpoints)."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def safe_load(stream: Any) -> Any:
    """``yaml.safe_load`` with libyaml's loader where PyYAML has it (its wheels do): 5-10x faster on our files,
    the same documents, the same errors (with their line and column)."""
    import yaml

    return yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
