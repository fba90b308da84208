"""Stage ``frames``: decode every input clip once into 40 frames at 4 FPS (224x224 RGB) and 10 s of 16 kHz audio.

Work is cut into shards of ``shard_size`` clips (rows of the cache). A shard is committed atomically (tar via
temp + rename, then its manifest, which marks it complete), so a run killed at any point resumes where it stopped
and produces the same bytes. ``RANK``/``WORLD_SIZE`` give each machine disjoint shards; ``--workers`` runs local
processes. When every shard is complete, the stage writes ``rejects.csv``, the ``meta`` arrays of the feature
cache and its record.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import webdataset as wds
from pydantic import BaseModel, Field
from tqdm import tqdm

from pipeline import cache
from pipeline.framestore import AUDIO_KEY, encode_audio, encode_frames, read_manifest, shard_name
from pipeline.inputs import ClipSource, discover
from v2a.io import atomic_path, atomic_write_json, atomic_write_text, exclusive_lock, read_json
from v2a.procs import worker_pool

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Positive = Annotated[int, Field(ge=1)]


@dataclass
class FramesParams:
    """``stages.frames.params`` (checked when the configuration loads, v2a/schema.py)."""

    fps: Positive = 4
    seconds: Annotated[float, Field(gt=0)] = 10.0
    size: Positive = 224
    sample_rate: Positive = 16_000
    codec: Literal["h264", "raw"] = "h264"  # h264 (compact, near-lossless) | raw (lossless uint8 npy)
    crf: Annotated[int, Field(ge=0, le=51)] = 14
    shard_size: Positive = 64
    max_reject_share: Annotated[float, Field(ge=0, le=1)] = 0.2  # fail the stage above this share of rejects
    silence_dbfs: float = -60.0  # peak below this -> audio_silent (kept for generation, not for training)
    max_side: Positive = 8192  # larger frames are rejected as absurd

    @classmethod
    def from_dict(cls, d: dict) -> "FramesParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"stages.frames.params: unknown keys {sorted(unknown)}")
        p = cls(**d)
        if p.shard_size < 1:
            raise ValueError(f"stages.frames.params.shard_size must be >= 1, got {p.shard_size}")
        return p

    @property
    def n_frames(self) -> int:
        return int(round(self.fps * self.seconds))

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.seconds))


class Runtime(BaseModel):
    """``stages.frames.runtime``: none (``--workers`` is a command-line option)."""


Params = FramesParams


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


def _reject(index: int, src: dict, reason: str) -> dict:
    return {"index": index, "id": src["id"], "source": src["source"], "label": src["label"], "split": src["split"],
            "status": reason, "n_frames": 0, "audio_len": 0, "has_audio": False, "audio_silent": False,
            "duration": 0.0, "native_fps": 0.0}


def process_shard(frames_dir: str, k: int, rows: list[dict], first_index: int, params: dict, fingerprint: str,
                  threads: int = 0) -> dict:
    """Decode the clips of shard ``k`` and commit it; returns its manifest. Runs in a worker process.

    ``threads``: decoder threads per clip (0 = FFmpeg's choice; 1 when several workers share the cores).
    """
    from pipeline.media import MediaError, decode_clip  # imported here: workers are spawned

    p = FramesParams.from_dict(params)
    frames_dir = Path(frames_dir)
    records = []
    tar_path = frames_dir / f"{shard_name(k)}.tar"
    with atomic_path(tar_path) as tmp:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, mtime=0.0, user="", group="", encoder=False)
            for j, src in enumerate(rows):
                index = first_index + j
                if src.get("problem"):
                    records.append(_reject(index, src, src["problem"]))
                    continue
                clip = ClipSource(**src)
                try:
                    d = decode_clip(clip.open(), fps=p.fps, seconds=p.seconds, size=p.size,
                                    sample_rate=p.sample_rate, max_side=p.max_side, silence_dbfs=p.silence_dbfs,
                                    threads=threads)
                except MediaError as e:
                    records.append(_reject(index, src, str(e.reason)))
                    continue
                except (OSError, ValueError, RuntimeError) as e:  # anything PyAV raises on a broken file
                    records.append(_reject(index, src, f"decode_error: {type(e).__name__}: {e}"))
                    continue
                frames_bytes, ext = encode_frames(d.frames[: d.n_frames], codec=p.codec, crf=p.crf, fps=p.fps)
                sample = {"__key__": clip.id, f"frames.{ext}": frames_bytes}
                if d.audio_len > 0:
                    sample[AUDIO_KEY] = encode_audio(d.audio[: d.audio_len], p.sample_rate)
                rec = {"index": index, "id": clip.id, "source": clip.source, "label": clip.label,
                       "split": clip.split, "status": "", "n_frames": int(d.n_frames), "audio_len": int(d.audio_len),
                       "has_audio": bool(d.has_audio), "audio_silent": bool(d.audio_silent),
                       "duration": float(d.duration), "native_fps": float(d.native_fps), "frames_ext": ext,
                       "width": int(d.width), "height": int(d.height),
                       "bytes": len(frames_bytes) + len(sample.get(AUDIO_KEY, b""))}
                sample["json"] = json.dumps(rec, sort_keys=True).encode("utf-8")
                writer.write(sample)
                records.append(rec)
            writer.close()
    manifest = {"shard": k, "fingerprint": fingerprint, "clips": records}
    atomic_write_json(frames_dir / f"{shard_name(k)}.json", manifest)  # last: marks the shard complete
    return manifest


def run(ctx: StageContext) -> None:
    p = FramesParams.from_dict(ctx.params)
    out = ctx.cfg.frames_dir
    out.mkdir(parents=True, exist_ok=True)
    fp = ctx.fingerprint.value
    with exclusive_lock(out / f".lock.rank{ctx.rank}", what=f"the frames stage output {out} (rank {ctx.rank})"):
        (out / "_stage.json").unlink(missing_ok=True)  # stale or forced: this run writes a new record
        for tmp in out.glob(".*.tmp"):
            tmp.unlink()
        clips = discover(ctx.cfg.path("videos"), ctx.cfg.optional_path("labels"))
        if not clips:
            raise RuntimeError(f"no input clips found in {ctx.cfg.path('videos')}")
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

    with exclusive_lock(out / ".lock.finalize", what=f"the frames stage output {out}"):
        _finalize(ctx, out, n_shards, len(rows), p, fp)


def _run_shards(ctx: StageContext, out: Path, todo: list[int], rows: list[dict], p: FramesParams, fp: str) -> None:
    def args(k: int):
        s = k * p.shard_size
        return (str(out), k, rows[s: s + p.shard_size], s, asdict(p), fp, 0 if ctx.workers <= 1 else 1)

    bar = tqdm(total=sum(len(args(k)[2]) for k in todo), unit="clip", desc="frames", disable=not ctx.progress)
    if ctx.workers <= 1:
        for k in todo:
            m = process_shard(*args(k))
            bar.update(len(m["clips"]))
    else:
        with worker_pool(ctx.workers) as pool:  # spawned workers that exit with this process, even on SIGKILL
            futures = [pool.submit(process_shard, *args(k)) for k in todo]
            for f in as_completed(futures):
                bar.update(len(f.result()["clips"]))
    bar.close()


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
    cache.write_meta(ctx.cfg.zarr_path, records, shard_size=p.shard_size, fingerprint=fp)
    kept = [r for r in records if not r["status"]]
    per_clip = float(np.mean([r["bytes"] for r in kept])) if kept else 0.0
    summary = {"clips": n_clips, "rejected": len(rejects), "no_audio": sum(not r["has_audio"] for r in kept),
               "silent": sum(r["audio_silent"] for r in kept), "bytes_per_clip": round(per_clip)}
    log.info("frames: %s (%.1f KB per clip stored; rejects in %s)", summary, per_clip / 1024, out / "rejects.csv")
    share = len(rejects) / max(1, n_clips)
    if share > p.max_reject_share:
        raise RuntimeError(
            f"frames: {len(rejects)} of {n_clips} clips rejected ({share:.0%} > max_reject_share "
            f"{p.max_reject_share:.0%}); see {out / 'rejects.csv'}. The decoded shards are kept."
        )
    atomic_write_json(out / "_stage.json", ctx.record(summary=summary))
