"""A folder of real-codec clips like a scraped video set: the frames benchmark's input.

Six kinds, cycled (``make_folder(dir, n)`` writes ``n`` clips, reused when already there):

| kind | container | video | audio |
| --- | --- | --- | --- |
| ``h264_720p`` | mp4 | H.264 1280x720 25 fps | AAC stereo 44.1 kHz |
| ``vp9`` | webm | VP9 640x360 30 fps | Opus stereo 48 kHz |
| ``mpeg4`` | avi | MPEG-4 Part 2 640x480 25 fps | MP3 stereo 44.1 kHz |
| ``mpeg2_silent`` | mpg (PS) | MPEG-2 720x576 25 fps | none |
| ``qcif`` | mp4 | H.264 176x144 29.97 fps | AAC mono 22.05 kHz |
| ``mkv_14s`` | mkv | H.264 854x480 24 fps, 14 s | AAC stereo 48 kHz |

Content is a detailed texture panning under a moving box (the codecs have real motion and detail to code), sound a
modulated tone; every clip but the mkv lasts 11 s (the stage reads the first 10 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Kind:
    name: str
    ext: str
    vcodec: str
    width: int
    height: int
    fps: Fraction
    acodec: str | None
    rate: int = 44_100
    channels: int = 2
    seconds: float = 11.0
    options: tuple = ()
    pix_fmt: str = "yuv420p"


KINDS = (
    Kind("h264_720p", "mp4", "libx264", 1280, 720, Fraction(25), "aac", options=(("preset", "superfast"),
                                                                                    ("crf", "23"))),
    Kind("vp9", "webm", "libvpx-vp9", 640, 360, Fraction(30), "libopus", rate=48_000,
         options=(("deadline", "realtime"), ("cpu-used", "8"), ("b", "800k"))),
    Kind("mpeg4", "avi", "mpeg4", 640, 480, Fraction(25), "libmp3lame", options=(("qscale", "4"),)),
    Kind("mpeg2_silent", "mpg", "mpeg2video", 720, 576, Fraction(25), None, options=(("b", "4M"),)),
    Kind("qcif", "mp4", "libx264", 176, 144, Fraction(30000, 1001), "aac", rate=22_050, channels=1,
         options=(("preset", "superfast"),)),
    Kind("mkv_14s", "mkv", "libx264", 854, 480, Fraction(24), "aac", rate=48_000, seconds=14.0,
         options=(("preset", "superfast"), ("crf", "23"))),
)


def _texture(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(max(4, h // 12), max(4, w // 12) * 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w * 2, h), Image.BICUBIC))  # (H, 2W, 3)


def _wave(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    return np.stack([x * (0.8 + 0.2 * c) for c in range(channels)]).astype(np.float32)  # (C, n)


def _encode_audio(c, a, kind: Kind) -> None:
    wave = _wave(kind.seconds, kind.rate, kind.channels)  # (C, n) float
    layout = "mono" if kind.channels == 1 else "stereo"
    to_codec = av.AudioResampler(format=a.codec_context.format.name, layout=layout, rate=kind.rate)
    step = 1152 if kind.acodec == "libmp3lame" else 960 if kind.acodec == "libopus" else 1024
    for s in range(0, wave.shape[1], step):
        chunk = wave[:, s:s + step]
        chunk = np.pad(chunk, ((0, 0), (0, step - chunk.shape[1])))  # (C, step)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
        fr.sample_rate, fr.pts = kind.rate, s
        for conv in to_codec.resample(fr):
            for p in a.encode(conv):
                c.mux(p)
    for p in a.encode(None):
        c.mux(p)


def make_clip(path: Path, kind: Kind, seed: int) -> None:
    w, h = kind.width, kind.height
    tex = _texture(w, h, seed)
    box = max(8, h // 4)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fmt = {"mpg": "mpeg"}.get(kind.ext)
    with av.open(str(tmp), "w", format=fmt) as c:
        vs = c.add_stream(kind.vcodec, rate=kind.fps)
        vs.width, vs.height, vs.pix_fmt = w, h, kind.pix_fmt
        vs.options = dict(kind.options)
        a = None
        if kind.acodec:
            a = c.add_stream(kind.acodec, rate=kind.rate, layout="mono" if kind.channels == 1 else "stereo")
        for k in range(int(kind.seconds * kind.fps)):
            x0 = (k * max(1, w // 180)) % w
            img = tex[:, x0:x0 + w].copy()  # (H, W, 3)
            y0 = (k * 5) % max(1, h - box)
            img[y0:y0 + box, w // 4:w // 4 + box] = (255, 255 - k % 256, 40)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        if a is not None:
            _encode_audio(c, a, kind)
    tmp.rename(path)


def make_folder(folder: Path, n: int) -> list[Path]:
    """``n`` clips (kinds cycled) in ``folder``; existing ones are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        p = folder / f"{kind.name}_{i:03d}.{kind.ext}"
        if not p.exists():
            make_clip(p, kind, seed=i)
        paths.append(p)
    return paths
