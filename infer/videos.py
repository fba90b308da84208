"""``v2a generate VIDEO...``: sound for any video files or folders, with the same decode and encoder code as the cache.

Features come from the cache when it holds the same source file and its encoder arrays are fresh; otherwise the
clip is decoded (first 10 s, 4 FPS), its frames pass through the cache's frame codec and are encoded here with the
encoders configured in stages.yaml, rounded to the cache's storage dtype: the mapper sees exactly what the cache
would have given it. A file that cannot be decoded is reported
(and listed in ``rejects.csv`` in the output folder); the other files go on.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch

from frozen import audiomae, cavp, timechat
from infer.generate import ClipJob, GenerateParams, Generator, mapper_checkpoint
from pipeline.frames import FramesParams
from pipeline.framestore import decode_frames, encode_frames
from pipeline.inputs import SKIP_EXTS
from v2a.config import Config
from v2a.dist import pick_device
from v2a.io import atomic_write_text
from v2a.runner import Runner

log = logging.getLogger(__name__)


def list_videos(inputs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and f.suffix.lower().lstrip(".") not in SKIP_EXTS)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


def safe_name(p: Path, taken: set[str]) -> str:
    """A file-name-safe clip id from a video's stem (unique within this run)."""
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.stem).strip("_") or "clip"
    name, n = base[:120], 1
    while name in taken:
        name, n = f"{base[:110]}_{n}", n + 1
    taken.add(name)
    return name


def _cached_features(cfg: Config, encoders: list[str]) -> dict[str, dict]:
    """{resolved source path: {encoder: features}} for clips of a fresh cache (empty when there is none)."""
    if not cfg.zarr_path.exists():
        return {}
    r = Runner(cfg)
    try:
        if not all(r.status(e)[0] for e in encoders):
            return {}
    except (RuntimeError, FileNotFoundError, ValueError):
        return {}
    from pipeline import cache

    root = cache.open_store(cfg.zarr_path, "r")
    meta = cache.read_meta(root)
    base = cfg.path("videos")
    out = {}
    for i in np.flatnonzero(meta["status"] == ""):
        src = Path(str(meta["source"][i]))
        src = src if src.is_absolute() else (base / src if not src.exists() else src)
        out[str(src.resolve())] = {"row": int(i), **{e: root[f"{e}/emb"] for e in encoders}}
    return out


def as_stored(frames: np.ndarray, n_frames: int, fp: FramesParams) -> np.ndarray:
    """The frames exactly as the cache would store them (its codec), so features match the training data."""
    stored, ext = encode_frames(frames[:n_frames], codec=fp.codec, crf=fp.crf, fps=fp.fps, preset=fp.preset)
    out = np.zeros_like(frames)  # (40, 224, 224, 3), zeros after n_frames
    out[:n_frames] = decode_frames(stored, ext)
    return out


ENCODERS = {"cavp": cavp, "timechat": timechat, "audiomae": audiomae}  # stage name -> frozen module


class Encoders:
    """The encoders the mapper needs, built lazily from stages.yaml."""

    def __init__(self, cfg: Config, names: list[str], device: str):
        self.cfg, self.names, self.device, self._built = cfg, names, device, {}

    def __call__(self, frames: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
        out = {}
        for name in self.names:
            if name not in self._built:
                params = {k: v for k, v in self.cfg.stage(name).params.items() if k != "dtype"}
                self._built[name] = ENCODERS[name].build(params, self.device)
            dtype = self.cfg.stage(name).params.get("dtype", "float16")
            y = self._built[name].encode(torch.from_numpy(frames[None]), torch.tensor([n_frames]))[0].numpy()
            out[name] = y.astype(dtype).astype(np.float32)  # what the cache would hold
        return out


def _whole(d, fp: FramesParams, encode, path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Whole-video mode: features per 10 s segment, stacked (S, ...); each segment is encoded like a clip."""
    per = fp.n_frames  # 40 frames a segment
    n_seg = max(1, -(-d.n_frames // per))
    feats: dict[str, list] = {}
    for k in range(n_seg):
        n_k = min(per, d.n_frames - k * per)
        frames = d.frames[k * per: (k + 1) * per]  # (40, 224, 224, 3), zero-padded at the end
        for name, y in encode(as_stored(frames, n_k, fp), n_k).items():
            feats.setdefault(name, []).append(y)
    log.info("%s: %d segments of %g s", path, n_seg, fp.seconds)
    return {k: np.stack(v) for k, v in feats.items()}, n_seg


def generate_videos(cfg: Config, inputs: list[Path], out: Path, *, prompt: str | None = None,
                    batch_size: int = 4, progress: bool = True, whole: bool = False,
                    max_seconds: float = 600.0) -> list[dict]:
    """Generate for every video under ``inputs``; ``whole`` covers the whole video (up to ``max_seconds``) in
    10 s segments instead of its first 10 s."""
    from pipeline.media import MediaError, decode_clip, probe

    p = GenerateParams.from_dict(cfg.stage("generate").params)
    device = pick_device(cfg.stage("generate").runtime.get("device", "auto"))
    fresh, why = Runner(cfg).status("train")
    if not fresh:
        raise RuntimeError(f"the mapper in {cfg.path('runs') / 'mapper'} is stale for this configuration "
                           f"({'; '.join(why)}): run `make train` (v2a run train) first")
    gen = Generator(p, mapper_checkpoint(cfg.path("runs") / "mapper", p.mapper), device=device,
                    batch_size=batch_size)
    names = {"both": ["cavp", "timechat"], "cavp": ["cavp"], "timechat": ["timechat"]}[gen.spec.encoders]
    fp = FramesParams.from_dict(cfg.stage("frames").params)
    cached = _cached_features(cfg, names)
    encode = Encoders(cfg, names, device)
    jobs, rejects, taken = [], [], set()
    for path in list_videos(inputs):
        cid = safe_name(path, taken)
        try:
            seconds = fp.seconds
            if whole:
                dur = min(max_seconds, probe(str(path)).duration or fp.seconds)
                seconds = fp.seconds * max(1, -(-int(np.ceil(dur * fp.fps)) // fp.n_frames))
            d = decode_clip(str(path), fps=fp.fps, seconds=seconds, size=fp.size, sample_rate=fp.sample_rate,
                            max_side=fp.max_side, silence_dbfs=fp.silence_dbfs)
        except MediaError as e:
            log.error("%s: cannot generate: %s", path, e.reason)
            rejects.append((str(path), e.reason))
            continue
        hit = None if whole else cached.get(str(path.resolve()))
        segments = 0
        if whole:
            feats, segments = _whole(d, fp, encode, path)
        elif hit is not None:
            feats = {n: hit[n][hit["row"]].astype(np.float32) for n in names}
        else:
            feats = encode(as_stored(d.frames, d.n_frames, fp), d.n_frames)
        lead = 1 if segments else 0  # whole mode: (S, ...) per clip
        gen.check_features(feats["cavp"].shape[lead:] if "cavp" in feats else None,
                           feats["timechat"].shape[lead:] if "timechat" in feats else None, str(path))
        gt = d.audio[: d.audio_len] if d.has_audio and not d.audio_silent else None
        jobs.append(ClipJob(id=cid, cavp=feats.get("cavp"), timechat=feats.get("timechat"), prompt=prompt,
                            video=str(path), ground_truth=gt, segments=segments,
                            info={"source": str(path), "segments": max(1, segments),
                                  "features": "cache" if hit is not None else "computed"}))
    out.mkdir(parents=True, exist_ok=True)
    if rejects:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["source", "reason"])
        w.writerows(rejects)
        atomic_write_text(out / "rejects.csv", buf.getvalue())
    return gen.run(jobs, out, progress=progress, segment_seconds=fp.seconds) if jobs else []
