"""Find the input clips: a folder of videos (+ optional VGGSound-style labels CSV) or webdataset tar shards.

VGGSound's CSV has no header and four columns ``youtube_id,start_seconds,label,split``; its clip files are
named ``{youtube_id}_{start_seconds:06d}.mp4``. A clip's id is its file stem (or its webdataset ``__key__``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from v2a.io import check_clip_id

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


def read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """VGGSound CSV -> {clip id: (label, split)}; a header line, if any, is skipped."""
    labels: dict[str, tuple[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected youtube_id,start_seconds,label[,split], got {row}")
            yid, start, label = row[0].strip(), row[1].strip(), row[2].strip()
            split = row[3].strip() if len(row) > 3 else ""
            try:
                start_i = int(float(start))
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise ValueError(f"{path}:{lineno}: start_seconds {start!r} is not a number") from None
            labels[f"{yid}_{start_i:06d}"] = (label, split)
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


def discover(videos: Path, labels: Path | None = None) -> list[ClipSource]:
    """All input clips, sorted by id; unsafe and duplicate ids are kept with a ``problem`` (become rejects)."""
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(f"input videos {videos} do not exist (paths.videos in stages.yaml)")
    found: list[ClipSource] = []
    files = [videos] if videos.is_file() else sorted(p for p in videos.rglob("*") if p.is_file())
    for p in files:
        if p.name.startswith(".") or (labels is not None and p.resolve() == Path(labels).resolve()):
            continue
        ext = p.suffix.lower().lstrip(".")
        if ext == "tar":
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
        seen.add(c.id)
    found.sort(key=lambda c: (c.id, c.source))
    log.info("found %d input clips in %s (%d labelled)", len(found), videos, sum(bool(c.label) for c in found))
    return found
