"""Stage ``frames``: decode every input clip once into the clip grid's frames and audio (frozen/grid.py; by default
40 frames at 4 FPS, 224x224 RGB, and 10 s of 16 kHz audio).

Work is cut into shards of ``shard_size`` clips (rows of the cache). A shard is committed atomically (tar via
temp + rename, then its manifest, which marks it complete), so a run killed at any point resumes where it stopped
and produces the same bytes. ``RANK``/``WORLD_SIZE`` give each machine disjoint shards; ``--workers`` runs local
processes. When every shard is complete, the stage writes ``rejects.csv``, the ``meta`` arrays of the feature
cache and its record.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

from frozen.grid import ClipGrid
from pipeline.framestore import (AUDIO_KEY, JPEG_MAX_SIDE, encode_audio, encode_frames, read_manifest, shard_name,
                                 strip_fits)
from pipeline.inputs import ClipSource, discover
from v2a.logfmt import pairs
from v2a.io import atomic_path, atomic_write_json, atomic_write_text, exclusive_lock, read_json
from v2a.procs import bounded_map, worker_pool
from v2a.schema import from_known_keys

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Positive = Annotated[int, Field(ge=1)]


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass
class FramesParams:
    """``stages.frames.params`` (checked when the configuration loads, v2a/schema.py)."""

    fps: Positive = 4
    seconds: Annotated[float, Field(gt=0)] = 10.0
    size: Positive = 224
    sample_rate: Positive = 16_000
    codec: Literal["jpeg", "h264", "raw"] = "jpeg"  # jpeg (a film strip: fast) | h264 (~3x smaller, ~10x slower
    # to write) | raw (lossless uint8 npy)
    quality: Annotated[int, Field(ge=1, le=100)] = 95  # jpeg: quality of the strip (4:4:4)
    crf: Annotated[int, Field(ge=0, le=51)] = 14  # h264: constant quality
    preset: Literal[X264_PRESETS] = "medium"  # h264: x264 preset (veryfast: faster, larger)
    shard_size: Positive = 64
    max_reject_share: Annotated[float, Field(ge=0, le=1)] = 0.2  # fail the stage above this share of rejects
    silence_dbfs: float = -60.0  # peak below this -> audio_silent (kept for generation, not for training)
    max_side: Positive = 8192  # larger frames are rejected as absurd

    @classmethod
    def from_dict(cls, d: dict) -> "FramesParams":
        p = from_known_keys(cls, d, "stages.frames.params")
        if p.shard_size < 1:
            raise ValueError(f"stages.frames.params.shard_size must be >= 1, got {p.shard_size}")
        if p.preset not in X264_PRESETS:
            raise ValueError(f"stages.frames.params.preset must be one of {list(X264_PRESETS)}, got {p.preset!r}")
        return p

    def __post_init__(self) -> None:  # also run by the config check (v2a/schema.py validates this dataclass)
        if self.codec == "jpeg" and not strip_fits(self.n_frames, self.size):
            raise ValueError(f"{self.n_frames} frames of {self.size} px do not fit in one JPEG strip "
                             f"({JPEG_MAX_SIDE} rows); use codec h264 or raw")

    @property
    def grid(self) -> ClipGrid:
        """The clip grid these params decode on: every frame and sample count derives from it."""
        return ClipGrid(fps=self.fps, seconds=self.seconds, size=self.size, sample_rate=self.sample_rate)

    @property
    def n_frames(self) -> int:
        return self.grid.n_frames

    @property
    def n_samples(self) -> int:
        return self.grid.n_samples


class Runtime(BaseModel):
    """``stages.frames.runtime``: none (``--workers`` is a command-line option)."""


Params = FramesParams


def agree(name: str, params: dict) -> list[str]:
    """Checked when the configuration loads (v2a/schema.py): the grid's own rules (whole frames and samples a
    clip, AudioLDM-2's audio rate); what the stages reading the frames need is theirs to say."""
    return params[name].grid.problems()


def read_record(ctx: StageContext) -> dict | None:
    d = ctx.cfg.frames_dir
    if (d / "_stage.json").exists():
        return read_json(d / "_stage.json")
    if (d / "plan.json").exists():
        plan = read_json(d / "plan.json")
        done = sum(_shard_done(d, k, plan["fingerprint"]) for k in range(plan["n_shards"]))
        return {"complete": False, "fingerprint": plan["fingerprint"], "components": plan["components"],
                "progress": f"{done}/{plan['n_shards']} shards done"}
    return None


def _shard_done(frames_dir: Path, k: int, fingerprint: str) -> bool:
    m = read_manifest(frames_dir, k)
    return m is not None and m.get("fingerprint") == fingerprint and (frames_dir / f"{shard_name(k)}.tar").exists()


def store_frames(frames: np.ndarray, p: FramesParams) -> tuple[bytes, str]:
    """The stored form of decoded frames under these params: (bytes, extension)."""
    return encode_frames(frames, codec=p.codec, quality=p.quality, crf=p.crf, fps=p.fps, preset=p.preset)


def _reject(index: int, src: dict, reason: str) -> dict:
    return {"index": index, "id": src["id"], "source": src["source"], "label": src["label"], "split": src["split"],
            "status": reason, "n_frames": 0, "audio_len": 0, "has_audio": False, "audio_silent": False,
            "duration": 0.0, "native_fps": 0.0}


def process_clip(src: dict, index: int, p: FramesParams, threads: int = 0) -> tuple[dict, dict | None]:
    """Decode one clip and encode its stored form: (record, tar members or None when rejected). Runs in a worker.

    ``threads``: decoder threads (0 = FFmpeg's choice; 1 when several workers share the cores).
    """
    from pipeline.media import MediaError, decode_clip  # imported here: workers are spawned

    if src.get("problem"):
        return _reject(index, src, src["problem"]), None
    clip = ClipSource(**src)
    try:
        d = decode_clip(clip.open(), fps=p.fps, seconds=p.seconds, size=p.size, sample_rate=p.sample_rate,
                        max_side=p.max_side, silence_dbfs=p.silence_dbfs, threads=threads)
    except MediaError as e:  # the reason's keyword; with the size, for a size (what the header declares)
        reason = f"{e.reason}: {e.detail}" if e.reason == "absurd_dimensions" and e.detail else str(e.reason)
        return _reject(index, src, reason), None
    except (OSError, ValueError, RuntimeError) as e:  # anything PyAV raises on a broken file
        return _reject(index, src, f"decode_error: {type(e).__name__}: {e}"), None
    frames_bytes, ext = store_frames(d.frames[: d.n_frames], p)
    members = {f"frames.{ext}": frames_bytes}
    if d.audio_len > 0:
        members[AUDIO_KEY] = encode_audio(d.audio[: d.audio_len], p.sample_rate)
    rec = {"index": index, "id": clip.id, "source": clip.source, "label": clip.label, "split": clip.split,
           "status": "", "n_frames": int(d.n_frames), "audio_len": int(d.audio_len), "has_audio": bool(d.has_audio),
           "audio_silent": bool(d.audio_silent), "duration": float(d.duration), "native_fps": float(d.native_fps),
           "frames_ext": ext, "width": int(d.width), "height": int(d.height),
           "bytes": len(frames_bytes) + len(members.get(AUDIO_KEY, b""))}
    members["json"] = json.dumps(rec, sort_keys=True).encode("utf-8")
    return rec, members


def tar_member(name: str, data: bytes) -> bytes:
    """One tar member exactly as ``tarfile`` writes it (PAX format, UTF-8 names): header block(s), then the data
    NUL-padded to 512 bytes; mtime 0, mode 0444, no owner, so that the bytes depend on name and data alone."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(data), 0, 0o444, "", ""
    return (ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data
            + tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))


def clip_members(key: str, members: dict[str, bytes]) -> bytes:
    """A clip's members ``<key>.<ext>`` in extension order: its contiguous run of a webdataset tar."""
    return b"".join(tar_member(f"{key}.{ext}", members[ext]) for ext in sorted(members))


def tar_end(offset: int) -> bytes:
    """What closes a tar of ``offset`` bytes: two zero blocks, then zeros up to a whole 10240-byte record."""
    end = 2 * tarfile.BLOCKSIZE
    return tarfile.NUL * (end + (-(offset + end) % tarfile.RECORDSIZE))


def write_part(frames_dir: Path, k: int, rec: dict, members: dict[str, bytes]) -> str:
    """A worker writes its clip's tar run to a part file beside the shard (removed when the shard is committed, or
    as a stale ``.tmp`` when a run starts): the parent never holds the clip's bytes, and its commit is a copy."""
    part = Path(frames_dir) / f".{shard_name(k)}.{rec['index']:09d}.part.tmp"
    with open(part, "wb") as fh:
        fh.write(clip_members(rec["id"], members))
    return str(part)


def commit_shard(frames_dir: Path, k: int, results: list[tuple[dict, dict | str | None]], fingerprint: str) -> dict:
    """Write shard ``k`` from its clips' results in row order: the tar atomically, then its manifest.

    Each result is ``(record, members)`` with ``members`` a clip's ``{ext: bytes}``, the path of its part file
    (:func:`write_part`) or None (rejected). The tar is a webdataset shard, byte-reproducible, written without
    webdataset (importing it imports torch): members ``<key>.<ext>`` in row order, then extension order.
    """
    with atomic_path(frames_dir / f"{shard_name(k)}.tar") as tmp:
        with open(tmp, "wb", buffering=0) as fh:  # unbuffered: parts are appended at the descriptor's offset
            for rec, members in results:
                if isinstance(members, dict):
                    fh.write(clip_members(rec["id"], members))
                elif members is not None:
                    _append_file(fh, members)
            fh.write(tar_end(fh.tell()))
    manifest = {"shard": k, "fingerprint": fingerprint, "clips": [rec for rec, _ in results]}
    atomic_write_json(frames_dir / f"{shard_name(k)}.json", manifest)  # last: marks the shard complete
    for _, members in results:
        if isinstance(members, str):
            Path(members).unlink(missing_ok=True)
    return manifest


def _append_file(fh, path: str) -> None:
    """Append the file at ``path`` to the unbuffered ``fh``: inside the kernel where it can (copy_file_range),
    through a buffer elsewhere."""
    with open(path, "rb", buffering=0) as src:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < size:
                    n = os.copy_file_range(src.fileno(), fh.fileno(), size - copied)
                    if n == 0:
                        break
                    copied += n
            except OSError:  # a filesystem or kernel without it: fall back from where it stopped
                pass
        src.seek(copied)
        shutil.copyfileobj(src, fh, 1 << 22)


def process_clip_to_part(frames_dir: str, k: int, src: dict, index: int, params: FramesParams,
                         threads: int = 1) -> tuple[dict, str | None]:
    """:func:`process_clip` in a worker, the clip's bytes left in a part file: (record, part path or None)."""
    rec, members = process_clip(src, index, params, threads)
    return rec, (write_part(Path(frames_dir), k, rec, members) if members is not None else None)


def run(ctx: StageContext) -> None:
    p: FramesParams = ctx.params
    out = ctx.cfg.frames_dir
    out.mkdir(parents=True, exist_ok=True)
    fp = ctx.fingerprint.value
    with exclusive_lock(out / f".lock.rank{ctx.rank}", what=f"the frames stage output {out} (rank {ctx.rank})"):
        # the inputs first: a mistake in them (a labels CSV with a duplicate id...) leaves the previous output whole
        clips = discover(ctx.cfg.path("videos"), ctx.cfg.optional_path("labels"))
        if not clips:
            raise RuntimeError(f"no input clips found in {ctx.cfg.path('videos')}")
        (out / "_stage.json").unlink(missing_ok=True)  # stale or forced: this run writes a new record
        for tmp in _stale_temps(out, ctx.rank, ctx.world_size):
            tmp.unlink(missing_ok=True)
        rows = [c.to_dict() for c in clips]
        n_shards = (len(rows) + p.shard_size - 1) // p.shard_size
        plan = {"fingerprint": fp, "components": ctx.fingerprint.components, "n_clips": len(rows),
                "n_shards": n_shards, "shard_size": p.shard_size, "params": asdict(p), "clips": rows}
        atomic_write_json(out / "plan.json", plan)

        todo = [k for k in range(n_shards) if k % ctx.world_size == ctx.rank
                and (ctx.force or not _shard_done(out, k, fp))]
        if ctx.force:
            for k in todo:
                (out / f"{shard_name(k)}.json").unlink(missing_ok=True)
        log.info("frames: %d clips in %d shards; this process (rank %d/%d) has %d shards to do",
                 len(rows), n_shards, ctx.rank, ctx.world_size, len(todo))
        _run_shards(ctx, out, todo, rows, p, fp)
        # still holding this rank's lock: no run of this rank can start (and rewrite plan.json) before the end
        with exclusive_lock(out / ".lock.finalize", what=f"the frames stage output {out}"):
            _finalize(ctx, out, n_shards, len(rows), p, fp)


def _stale_temps(out: Path, rank: int, world_size: int) -> list[Path]:
    """Temporary files a killed run of this rank left (part files, half-written shards); those of shards that
    belong to other ranks, which may be running now, are left alone, and so are the shared files' (plan.json)
    unless this is the only rank."""
    stale = []
    for tmp in out.glob(".*.tmp"):
        m = re.match(r"\.shard-(\d+)\.", tmp.name)
        if (int(m.group(1)) % world_size == rank) if m else world_size == 1:
            stale.append(tmp)
    return stale


def _run_shards(ctx: StageContext, out: Path, todo: list[int], rows: list[dict], p: FramesParams, fp: str) -> None:
    """Decode the clips of the ``todo`` shards; each shard is committed as soon as its last clip is back.

    With ``--workers N`` the unit of work is a clip, not a shard, so that N processes stay busy even when there
    are fewer shards than workers (each decodes with one thread: no oversubscription). Shards are worked on in
    order, a few clips ahead (memory holds about one shard of results), and inside a shard the largest files go
    first, so that the run does not end on one worker finishing a long clip while the others wait.
    """
    shard_rows = {k: range(k * p.shard_size, min(len(rows), (k + 1) * p.shard_size)) for k in todo}
    jobs = [(k, s, rows[s]) for k in todo for s in _largest_first(rows, shard_rows[k])]
    pending: dict[int, dict[int, tuple]] = {}
    # forked workers (this process imports nothing heavy: they start in milliseconds), created before the progress
    # bar's thread; they exit with this process, even on SIGKILL
    if ctx.workers > 1 and jobs:
        import pipeline.media  # noqa: F401  (imported before forking: every worker inherits it)

        pool = worker_pool(ctx.workers, start="fork")
        # zarr (for the meta arrays at the end) imported while the workers decode, not after them
        threading.Thread(target=importlib.import_module, args=("pipeline.cache",), daemon=True).start()
    else:
        pool = None
    bar = tqdm(total=len(jobs), unit="clip", desc="frames", disable=not ctx.progress)

    def collect(k: int, index: int, result: tuple) -> None:
        pending.setdefault(k, {})[index] = result
        bar.update(1)
        if len(pending[k]) == len(shard_rows[k]):
            got = pending.pop(k)
            commit_shard(out, k, [got[i] for i in sorted(got)], fp)

    if pool is None:
        for k, index, src in jobs:
            collect(k, index, process_clip(src, index, p, 0))
    else:
        with pool:
            window = max(4 * ctx.workers, p.shard_size)
            calls = ((str(out), k, src, index, p, 1) for k, index, src in jobs)
            for j, result in bounded_map(pool, process_clip_to_part, calls, window):
                collect(jobs[j][0], jobs[j][1], result)
    bar.close()


def _largest_first(rows: list[dict], indices: range) -> list[int]:
    """``indices`` by decreasing size of their source file (a proxy for decoding time; members of a tar and
    missing files count as 0), ties in index order."""
    def size(i: int) -> int:
        src = rows[i]["source"]
        try:
            return 0 if "::" in src else os.path.getsize(src)
        except OSError:
            return 0
    return sorted(indices, key=lambda i: (-size(i), i))


def _finalize(ctx: StageContext, out: Path, n_shards: int, n_clips: int, p: FramesParams, fp: str) -> None:
    missing = [k for k in range(n_shards) if not _shard_done(out, k, fp)]
    if missing:
        log.warning("frames: %d shards are not done yet (other ranks?): %s...; rerun when they finish",
                    len(missing), missing[:5])
        return
    records = [r for k in range(n_shards) for r in read_manifest(out, k)["clips"]]
    for extra in out.glob("shard-*.*"):  # shards of an earlier, larger plan
        if int(extra.name.split("-")[1].split(".")[0]) >= n_shards:
            extra.unlink()
    rejects = [r for r in records if r["status"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "stage", "reason"])
    for r in rejects:
        w.writerow([r["id"], "frames", r["status"]])
    atomic_write_text(out / "rejects.csv", buf.getvalue())
    from pipeline import cache  # zarr: imported where needed, not by every worker

    cache.write_meta(ctx.cfg.zarr_path, records, shard_size=p.shard_size, fingerprint=fp)
    kept = [r for r in records if not r["status"]]
    per_clip = float(np.mean([r["bytes"] for r in kept])) if kept else 0.0
    summary = {"clips": n_clips, "rejected": len(rejects), "no_audio": sum(not r["has_audio"] for r in kept),
               "silent": sum(r["audio_silent"] for r in kept), "bytes_per_clip": round(per_clip)}
    log.info("frames: %s (%.1f KB per clip stored; rejects in %s)", pairs(summary), per_clip / 1024,
             out / "rejects.csv")
    share = len(rejects) / max(1, n_clips)
    if share > p.max_reject_share:
        raise RuntimeError(
            f"frames: {len(rejects)} of {n_clips} clips rejected ({share:.0%} > max_reject_share "
            f"{p.max_reject_share:.0%}); see {out / 'rejects.csv'}. The decoded shards are kept."
        )
    atomic_write_json(out / "_stage.json", ctx.record(summary=summary))
