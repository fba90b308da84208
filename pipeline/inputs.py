"""Find the input clips: a folder of videos (+ optional VGGSound-style labels CSV) or webdataset tar shards.

VGGSound's CSV has no header and four columns ``youtube_id,start_seconds,label,split``; its clip files are
named ``{youtube_id}_{start_seconds:06d}.mp4``. A clip's id is its file stem (or its webdataset ``__key__``).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import stat
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from v2a.io import InputError, check_clip_id

log = logging.getLogger(__name__)

VIDEO_EXTS = {"mp4", "m4v", "mov", "mkv", "webm", "avi", "mpeg", "mpg", "ts", "mts", "flv", "3gp", "ogv", "wmv"}
SKIP_EXTS = {"csv", "json", "txt", "md", "tar", "yaml", "yml", "lock", "tmp"}


@dataclass
class ClipSource:
    id: str
    source: str  # a file path, or "<tar path>::<member name>" for webdataset input
    label: str = ""
    split: str = ""
    problem: str = ""  # set when the clip is rejected before decoding (unsafe or duplicate id)

    def open(self):
        """A path or a file object PyAV can open."""
        if "::" in self.source:
            tar_path, member = self.source.split("::", 1)
            with tarfile.open(tar_path) as tar:
                return io.BytesIO(tar.extractfile(member).read())
        return self.source

    def to_dict(self) -> dict:
        return asdict(self)


SPLITS = ("train", "val", "test")
COLUMNS = "youtube_id,start_seconds,label[,split]"


def read_text(path: Path, what: str) -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped; any line ending); InputError naming the file, the
    line and the bytes when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        start = data.rfind(b"\n", 0, err.start) + 1
        end = data.find(b"\n", err.start)
        text = data[start:end if end >= 0 else len(data)].rstrip(b"\r")
        raise InputError(f"{what} {path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} in {text[:80]!r}); "
                         "save the file as UTF-8") from None


def _start_seconds(value: str) -> int | None:
    """A whole, non-negative number of seconds ("30", "30.0"), else None."""
    try:
        x = float(value)
    except ValueError:
        return None
    return int(x) if x >= 0 and x == int(x) else None


def read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """VGGSound CSV -> {clip id: (label, split)}, read strictly: UTF-8 (a BOM is fine), CRLF or LF, a header only on
    the first row; a row that is not ``youtube_id,start_seconds,label[,split]`` (split: train, val or test), a clip
    listed twice or undecodable text raises InputError naming the file, the line and the value."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path, "labels"), newline=""))
    labels: dict[str, tuple[str, str]] = {}
    first_line: dict[str, int] = {}
    rows = 0
    try:
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            rows += 1
            where = f"labels {path}:{line}"
            if len(row) not in (3, 4):
                raise InputError(f"{where}: expected the {len(COLUMNS.split(','))} columns {COLUMNS}, got "
                                 f"{len(row)}: {row}")
            yid, start, label = row[0].strip(), row[1].strip(), row[2].strip()
            split = row[3].strip() if len(row) == 4 else ""
            start_i = _start_seconds(start)
            if start_i is None and rows == 1:
                continue  # the header
            if start_i is None:
                raise InputError(f"{where}: start_seconds {start!r} is not a whole number of seconds")
            if not yid or not label:
                raise InputError(f"{where}: {'youtube_id' if not yid else 'label'} is empty in {row}")
            if split not in SPLITS + ("",):
                raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            cid = f"{yid}_{start_i:06d}"
            if cid in labels:
                raise InputError(f"{where}: clip {cid} ({yid!r} at {start!r} s) is already on line {first_line[cid]}; "
                                 "one row per clip")
            labels[cid], first_line[cid] = (label, split), line
    except csv.Error as err:
        raise InputError(f"labels {path}:{reader.line_num}: not a CSV row ({err})") from None
    return labels


def _tar_samples(tar_path: Path) -> list[ClipSource]:
    """One ClipSource per sample of a webdataset shard that carries a video."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members:
            base = m.name.rsplit("/", 1)[-1]
            key_dir = m.name[: len(m.name) - len(base)]
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            samples.setdefault(key_dir + stem, {})[ext.lower()] = m
        out = []
        for key, parts in samples.items():
            video = next((parts[e] for e in parts if e.rsplit(".", 1)[-1] in VIDEO_EXTS), None)
            if video is None:
                continue
            label, split = "", ""
            if "json" in parts:
                meta = json.loads(tar.extractfile(parts["json"]).read().decode("utf-8"))
                label, split = str(meta.get("label", "")), str(meta.get("split", ""))
            for e in ("cls", "txt", "label"):
                if not label and e in parts:
                    label = tar.extractfile(parts[e]).read().decode("utf-8").strip()
            out.append(ClipSource(id=key, source=f"{tar_path}::{video.name}", label=label, split=split))
    return out


def _not_a_file(p: Path, ext: str) -> str:
    """Why an entry of the videos folder that is not a regular file cannot be a clip (``reason: detail``), or ''
    when it is no clip at all (a folder, or a name a clip never has)."""
    if ext in SKIP_EXTS or (p.is_dir() and ext not in VIDEO_EXTS):
        return ""
    try:
        st = os.stat(p)  # follows links
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symlink_loop: {p.name} is a symbolic link that leads back to itself"
        return f"broken_link: {p.name} is a symbolic link to {os.readlink(p)!r}, which does not exist" \
            if p.is_symlink() else f"unreadable: {p.name}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"directory: {p.name} is a folder, not a video file"
    return f"not_a_regular_file: {p.name} is a {_kind(st.st_mode)}, not a video file"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symbolic link that loops (RuntimeError before Python 3.13)
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def discover(videos: Path, labels: Path | None = None) -> list[ClipSource]:
    """All input clips, sorted by id. Kept with a ``problem`` (they become rejects, listed in ``rejects.csv``): unsafe
    and duplicate ids, and entries named like a video that are not a file PyAV can read (a symbolic link that loops
    or leads nowhere, a folder named ``x.mp4``, a named pipe...)."""
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(f"input videos {videos} do not exist (paths.videos in stages.yaml)")
    found: list[ClipSource] = []
    entries = [videos] if videos.is_file() else sorted(videos.rglob("*"))
    for p in entries:
        if p.name.startswith(".") or (labels is not None and _same_file(p, Path(labels))):
            continue
        ext = p.suffix.lower().lstrip(".")
        if not p.is_file():
            problem = _not_a_file(p, ext)
            if problem:  # a name that says video, not a file PyAV can read: a reject with its reason
                found.append(ClipSource(id=p.stem, source=str(p), problem=problem))
        elif ext == "tar":
            found.extend(_tar_samples(p))
        elif ext not in SKIP_EXTS:
            found.append(ClipSource(id=p.stem, source=str(p)))
    table = read_labels(Path(labels)) if labels is not None and Path(labels).exists() else {}
    seen: set[str] = set()
    for c in sorted(found, key=lambda c: (c.id, c.source)):
        if c.id in table and not c.label:
            c.label, c.split = table[c.id]
        elif c.id in table and not c.split:
            c.split = table[c.id][1]
        try:
            check_clip_id(c.id)
        except ValueError as e:
            c.problem = f"unsafe_id: {e}"
        if not c.problem and c.id in seen:
            c.problem = f"duplicate_id: another input already has id {c.id}"
        if not c.problem:  # a reject does not take the id from a clip that is one
            seen.add(c.id)
    found.sort(key=lambda c: (c.id, c.source))
    log.info("found %d input clips in %s (%d labelled)", len(found), videos, sum(bool(c.label) for c in found))
    return found
