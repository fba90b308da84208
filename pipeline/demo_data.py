"""Synthetic demo clips with matched sound, a VGGSound-style labels CSV, and webdataset shards.

Each clip shows a coloured square on a slowly drifting dim background; at random instants the square flashes
bright for ``flash`` seconds and, at the same instant, a sound burst starts. The colour picks the class:

    red beep (880 Hz sine), green boop (220 Hz sine), blue tick (noise click), yellow buzz (440 Hz square)

Between bursts the sound track holds faint noise (-50 dBFS, i.e. not "silent"). ``make_demo_clips`` mixes
lengths (10 s, 3 s, 14 s), containers (mp4 H.264+AAC, mkv H.264+AAC, webm VP9+Opus) and one clip without audio.
Everything is deterministic given the seed (single-threaded encoders, no timestamps in headers).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import av
from av.codec.context import Flags
import numpy as np

CLASSES = (  # label, RGB colour, sound
    ("red beep", (235, 40, 40), ("sine", 880.0)),
    ("green boop", (40, 215, 60), ("sine", 220.0)),
    ("blue tick", (60, 90, 245), ("click", 0.0)),
    ("yellow buzz", (235, 225, 40), ("square", 440.0)),
)
CONTAINERS = {  # extension -> (video encoder, audio encoder, audio rate)
    "mp4": ("libx264", "aac", 44_100),
    "mkv": ("libx264", "aac", 48_000),
    "webm": ("libvpx-vp9", "libopus", 48_000),
    "avi": ("mpeg4", "mp2", 44_100),
    "mpeg": ("mpeg2video", "mp2", 44_100),
}
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class ClipSpec:
    youtube_id: str
    start: int  # VGGSound start_seconds
    label: str
    split: str
    path: str
    duration: float
    fps: int = 25
    width: int = 160
    height: int = 120
    events: list[float] = field(default_factory=list)  # flash/burst onsets, seconds (on frame boundaries)
    flash: float = 0.32  # seconds the square stays bright
    has_audio: bool = True
    audio_rate: int = 44_100
    channels: int = 1
    class_index: int = 0
    audio_delay: float = 0.0  # audio stream starts this many seconds after the video (its content shifted too)

    @property
    def id(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}"

    @property
    def ext(self) -> str:
        return Path(self.path).suffix.lstrip(".")


def _video_frames(spec: ClipSpec, rng: np.random.Generator):
    """Yield (H, W, 3) uint8 frames: drifting dim texture + a square that is bright during flashes."""
    h, w = spec.height, spec.width
    colour = np.array(CLASSES[spec.class_index][1], np.uint8)
    tex = rng.integers(18, 48, size=(h // 4 + 1, w // 4 + 1, 1), dtype=np.uint8)
    tex = np.repeat(np.repeat(tex, 4, axis=0), 4, axis=1)[:h, :w]  # (H, W, 1) blocky texture
    side = min(h, w) // 3
    y0 = int(rng.integers(0, h - side))
    x0 = int(rng.integers(0, w - side))
    dim = (colour // 6).astype(np.uint8)
    n = int(round(spec.duration * spec.fps))
    flash_frames = set()
    for e in spec.events:
        k = int(round(e * spec.fps))
        flash_frames.update(range(k, k + int(round(spec.flash * spec.fps))))
    for k in range(n):
        img = np.repeat(np.roll(tex, k, axis=1), 3, axis=2)  # (H, W, 3)
        img[y0:y0 + side, x0:x0 + side] = colour if k in flash_frames else dim
        yield img


def _audio(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """(channels, n) float32: faint noise plus a 0.25 s burst at every event."""
    sr = spec.audio_rate
    n = int(round(spec.duration * sr))
    x = (rng.standard_normal(n) * 10 ** (-50 / 20) / 3).astype(np.float32)  # ~-50 dBFS peak
    kind, freq = CLASSES[spec.class_index][2]
    m = int(0.25 * sr)
    t = np.arange(m) / sr
    env = np.minimum(t / 0.003, 1.0) * np.exp(-t / 0.06)
    if kind == "sine":
        burst = np.sin(2 * np.pi * freq * t)
    elif kind == "square":
        burst = np.sign(np.sin(2 * np.pi * freq * t)) * 0.7
    else:
        burst = rng.standard_normal(m) * (t < 0.02) * 0.8
    burst = (0.5 * env * burst).astype(np.float32)
    for e in spec.events:
        i = int(round(e * sr))
        j = min(n, i + m)
        x[i:j] += burst[: j - i]
    return np.clip(np.tile(x, (spec.channels, 1)), -1, 1)  # (C, n)


def write_clip(spec: ClipSpec, seed: int = 0) -> ClipSpec:
    """Encode ``spec`` to ``spec.path`` (container from its extension). Returns ``spec``."""
    vcodec, acodec, _ = CONTAINERS[spec.ext]
    rng = np.random.default_rng(seed)
    Path(spec.path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(spec.path, "w", container_options={"fflags": "+bitexact"}) as c:
        vs = c.add_stream(vcodec, rate=spec.fps)
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.codec_context.flags |= int(Flags.bitexact)
        if vcodec == "libx264":
            vs.options = {"preset": "superfast", "crf": "20", "threads": "1"}  # superfast has B-frames
        elif vcodec == "libvpx-vp9":
            vs.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "threads": "1"}
        else:
            vs.bit_rate = 800_000
        a_s = None
        if spec.has_audio:
            a_s = c.add_stream(acodec, rate=spec.audio_rate, layout="mono" if spec.channels == 1 else "stereo")
            a_s.codec_context.flags |= int(Flags.bitexact)
            wave = _audio(spec, rng)
        for img in _video_frames(spec, rng):
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a_s is not None:
            fmt = "fltp" if acodec in ("aac", "libopus") else "s16p"
            data = wave if fmt == "fltp" else (wave * 32767).astype(np.int16)
            layout = "mono" if spec.channels == 1 else "stereo"
            step, delay = 4096, int(round(spec.audio_delay * spec.audio_rate))
            data = data[:, delay:]  # the sound stays in sync with the picture; its stream starts later
            for i in range(0, data.shape[1], step):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + step]), format=fmt, layout=layout)
                fr.sample_rate, fr.pts = spec.audio_rate, delay + i
                for p in a_s.encode(fr):
                    c.mux(p)
            for p in a_s.encode():
                c.mux(p)
    return spec


def _events(rng: np.random.Generator, duration: float, fps: int, flash: float) -> list[float]:
    """2-5 onsets on frame boundaries, >= 0.8 s apart, each flash and burst inside the clip."""
    n = int(rng.integers(2, 6))
    lo, hi = 0.2, duration - max(flash, 0.3) - 0.05
    slots = np.arange(int(math.ceil(lo * fps)), int(hi * fps) + 1)
    picked: list[int] = []
    for k in rng.permutation(slots):
        if all(abs(int(k) - q) >= 0.8 * fps for q in picked):
            picked.append(int(k))
        if len(picked) == n:
            break
    return sorted(k / fps for k in picked)


DEMO_SPLITS = ("train", "test", "train", "val", "train", "test", "train", "train")  # cycled over the clips


def make_demo_clips(out_dir: str | Path, n: int = 8, seed: int = 0, *, width: int = 160, height: int = 120,
                    fps: int = 25, labels_name: str = "labels.csv", splits: Sequence[str] = DEMO_SPLITS,
                    duration: float | None = None) -> list[ClipSpec]:
    """Write ``n`` demo clips and ``labels_name`` (VGGSound CSV, no header) into ``out_dir``; return their specs.

    Clip ``i`` goes to split ``splits[i % len(splits)]``. ``duration`` None: the demo's mix (10 s, 3 s, 14 s; the
    7th of every 8 clips has no audio); a number: every clip lasts that long and has a sound track (containers
    and channel counts still vary), e.g. 10 s for metrics that need 8 s of audio and the video (DeSync, IB-score).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not splits or duration is not None and duration <= 0:
        raise ValueError(f"splits must name at least one split and duration be > 0, got {splits!r}, {duration!r}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(len(CLASSES))
    specs = []
    for i in range(n):
        yid = "".join(rng.choice(list(_ID_CHARS), size=11))
        start = int(rng.integers(0, 300))
        ext = {3: "mkv", 5: "webm"}.get(i % 8, "mp4")
        seconds = (10.0, 3.0, 14.0)[i % 3] if duration is None else float(duration)
        cls = int(classes[i % len(CLASSES)])
        spec = ClipSpec(youtube_id=yid, start=start, label=CLASSES[cls][0], split=splits[i % len(splits)],
                        path="", duration=seconds, fps=fps, width=width, height=height, class_index=cls,
                        has_audio=duration is not None or i % 8 != 6, channels=2 if i % 8 == 1 else 1,
                        audio_rate=CONTAINERS[ext][2])
        spec.path = str(out_dir / f"{spec.id}.{ext}")
        spec.events = _events(rng, seconds, fps, spec.flash)
        specs.append(write_clip(spec, seed=int(rng.integers(0, 2**31))))
    write_labels_csv(specs, out_dir / labels_name)
    return specs


def write_labels_csv(specs: list[ClipSpec], path: str | Path) -> Path:
    """VGGSound format: ``youtube_id,start_seconds,label,split`` per line, no header."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for s in specs:
        w.writerow([s.youtube_id, s.start, s.label, s.split])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
    return Path(path)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
    tar.addfile(info, io.BytesIO(data))


def pack_webdataset(specs: list[ClipSpec], out_dir: str | Path, shard_size: int = 4,
                    prefix: str = "demo") -> list[Path]:
    """Pack clips into webdataset tars ``{prefix}-{k:06d}.tar``; sample key = clip id, members
    ``{id}.{mp4|mkv|webm}``, ``{id}.json`` (label, split, youtube_id, start_seconds, class_index) and ``{id}.cls``
    (the label text)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = sorted(specs, key=lambda s: s.id)
    paths = []
    for k in range(0, len(specs), shard_size):
        path = out_dir / f"{prefix}-{k // shard_size:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for s in specs[k:k + shard_size]:
                meta = {"label": s.label, "split": s.split, "youtube_id": s.youtube_id, "start_seconds": s.start,
                        "class_index": s.class_index}
                _add_bytes(tar, f"{s.id}.{s.ext}", Path(s.path).read_bytes())
                _add_bytes(tar, f"{s.id}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
                _add_bytes(tar, f"{s.id}.cls", s.label.encode("utf-8"))
        paths.append(path)
    return paths


def spec_dict(spec: ClipSpec) -> dict:
    return asdict(spec) | {"id": spec.id}
