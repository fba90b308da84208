"""Storage of decoded clips (the frames stage's output) and its reader for the encoder stages.

Layout of ``cache/frames/``::

    plan.json               every input clip in index order: id, source, label, split (rows of the cache)
    shard-000003.tar        webdataset tar: per clip  <id>.frames.jpg|mkv|npy, <id>.audio.wav, <id>.json
    shard-000003.json       the shard's manifest (per-clip metadata and rejects); written last = shard complete
    rejects.csv             id,stage,reason of every rejected clip (written when all shards are complete)
    _stage.json             the stage record (fingerprint), written last of all

Frames are kept, by default, as one JPEG film strip per clip (the clip grid's frames stacked top to bottom, 4:4:4,
quality 95: ~25 ms to encode on one core, about a tenth of x264's time, and a file any image viewer opens);
``codec: h264`` keeps them as a small 4 FPS video instead (full-range 4:4:4 converted in numpy, constant quality;
~3x smaller, ~10x slower to write) and ``codec: raw`` as lossless uint8 ``.npy``. Audio is stored as float32 WAV, bit for bit
what the decoder produced: AudioLDM-2 never clips before normalising, and a loud clip's samples beyond full scale
(peak > 1) must survive (16-bit FLAC cannot hold them, nor the resampler's low bits). 640 kB per 10 s clip at
16 kHz; caches of the earlier 16-bit FLAC layout (``<id>.audio.flac``) are still read.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from frozen.grid import ClipGrid, grid_of

SHARD_FMT = "shard-{:06d}"


def shard_name(k: int) -> str:
    return SHARD_FMT.format(k)


# --------------------------------------------------------------------------------------------- frames codec
# RGB <-> YUV (full-range BT.601, as JPEG) is done here in numpy, not by swscale: swscale's converted frames were
# seen to depend on the process's history (same input, different bytes after other work), which would break the
# stage's byte-for-byte reproducibility. x264 then gets planar 4:4:4 and its output depends on the input alone.
_RGB2YUV = np.array([[0.299, 0.587, 0.114],
                     [-0.168735892, -0.331264108, 0.5],
                     [0.5, -0.418687589, -0.081312411]], dtype=np.float32)
_YUV2RGB = np.linalg.inv(_RGB2YUV.astype(np.float64)).astype(np.float32)
_OFFSET = np.array([0.0, 128.0, 128.0], dtype=np.float32)


def rgb_to_yuv444(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) uint8 full-range Y, Cb, Cr."""
    yuv = frame.astype(np.float32) @ _RGB2YUV.T + _OFFSET  # (H, W, 3)
    return np.clip(np.rint(yuv), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()


def yuv444_to_rgb(planes: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 full-range Y, Cb, Cr -> (H, W, 3) uint8 RGB."""
    yuv = planes.transpose(1, 2, 0).astype(np.float32) - _OFFSET  # (H, W, 3)
    return np.clip(np.rint(yuv @ _YUV2RGB.T), 0, 255).astype(np.uint8)


def _yuv_frame(planes: np.ndarray) -> av.VideoFrame:
    """A yuv444p frame whose row padding is zeroed too, so that nothing uninitialised reaches the encoder."""
    _, h, w = planes.shape
    vf = av.VideoFrame(w, h, "yuv444p")
    for plane, data in zip(vf.planes, planes):
        rows = np.zeros((h, plane.line_size), np.uint8)  # (H, line_size): padding bytes set, not left as garbage
        rows[:, :w] = data
        plane.update(rows.tobytes())
    return vf


JPEG_MAX_SIDE = 65_500  # the format's limit on either side of the strip
_STRIP_TAG = b"v2a frames "  # JPEG comment: b"v2a frames <n>x<H>x<W>"


def strip_fits(n_frames: int, height: int) -> bool:
    """Whether ``n_frames`` frames of ``height`` rows fit in one JPEG film strip."""
    return n_frames * height <= JPEG_MAX_SIDE


def _encode_strip(frames: np.ndarray, quality: int) -> bytes:
    """(n, H, W, 3) -> one baseline JPEG of (n * H, W): 4:4:4 (no chroma subsampling), so that every 8x8 block lies
    inside one frame and the strip decodes to exactly the frames a per-frame encoding would give (H % 8 == 0)."""
    n, h, w, _ = frames.shape
    if not strip_fits(n, h):
        raise ValueError(f"{n} frames of {h} rows exceed a JPEG strip ({JPEG_MAX_SIDE} rows): use codec h264 or raw")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frames.reshape(n * h, w, 3))).save(
        buf, "JPEG", quality=quality, subsampling=0, comment=_STRIP_TAG + f"{n}x{h}x{w}".encode())
    return buf.getvalue()


def _decode_strip(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        tag = im.info.get("comment", b"")
        arr = np.asarray(im.convert("RGB"))  # (n * H, W, 3)
    if not tag.startswith(_STRIP_TAG):
        raise RuntimeError("stored frames are a JPEG without the frames tag: re-run the frames stage")
    n, h, w = (int(v) for v in tag[len(_STRIP_TAG):].decode().split("x"))
    if arr.shape != (n * h, w, 3):
        raise RuntimeError(f"stored JPEG strip is {arr.shape}, its tag says {n}x{h}x{w}: re-run the frames stage")
    return arr.reshape(n, h, w, 3)


def encode_frames(frames: np.ndarray, *, codec: str = "jpeg", quality: int = 95, crf: int = 14, fps: int = 4,
                  preset: str = "medium") -> tuple[bytes, str]:
    """Encode (n, H, W, 3) uint8 RGB frames; returns (bytes, file extension). Deterministic for fixed inputs.

    ``codec``: ``jpeg`` (a film strip at ``quality``), ``h264`` (a 4:4:4 video at ``crf``; ``preset``: x264's
    speed/size trade-off, ``veryfast`` encodes ~2.3x faster than ``medium``, ~30 % larger) or ``raw`` (``.npy``).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (n, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if codec == "raw" or len(frames) == 0:
        buf = io.BytesIO()
        np.save(buf, frames, allow_pickle=False)
        return buf.getvalue(), "npy"
    if codec == "jpeg":
        return _encode_strip(frames, quality), "jpg"
    if codec != "h264":
        raise ValueError(f"frames codec must be 'jpeg', 'h264' or 'raw', got {codec!r}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska", options={"fflags": "+bitexact"}) as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuv444p"
        st.codec_context.color_range = 2  # full range (JPEG), matching rgb_to_yuv444
        # threads=1: x264's output must not depend on the machine; clips are parallel across workers anyway.
        # mbtree=0: x264's macroblock-tree pass read uninitialised memory here (same frames gave different bytes
        # depending on what the process did before; identical bytes with it off, whatever the heap holds).
        st.codec_context.options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
        st.codec_context.flags |= av.codec.context.Flags.bitexact
        for i, arr in enumerate(frames):
            vf = _yuv_frame(rgb_to_yuv444(arr))  # (3, H, W)
            vf.pts = i
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return buf.getvalue(), "mkv"


def decode_frames(data: bytes, ext: str) -> np.ndarray:
    """Inverse of :func:`encode_frames`: (n, H, W, 3) uint8."""
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == "jpg":
        return _decode_strip(data)
    with av.open(io.BytesIO(data)) as c:
        c.streams.video[0].thread_type = "NONE"
        frames = []
        for f in c.decode(video=0):
            if f.format.name not in ("yuv444p", "yuvj444p"):
                raise RuntimeError(f"stored frames are {f.format.name}, expected yuv444p: re-run the frames stage")
            frames.append(yuv444_to_rgb(f.to_ndarray()))  # (H, W, 3)
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


AUDIO_KEY = "audio.wav"  # the tar member suffix of a clip's audio


def encode_audio(audio: np.ndarray, sample_rate: int) -> bytes:
    """(n,) float -> mono 32-bit IEEE-float WAV bytes (lossless, no clipping). Written here rather than by
    libsndfile, whose float WAVs carry a PEAK chunk with the time of writing (the shards must be reproducible)."""
    data = np.asarray(audio, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, int(sample_rate), int(sample_rate) * 4, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf  # the readers' (libsndfile): the frames stage's workers never need it

    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return audio, sr


# --------------------------------------------------------------------------------------------- reading


@dataclass
class ClipRecord:
    """One clip as the encoder stages see it (padded to the full 10 s)."""

    index: int  # global row in the cache
    id: str
    meta: dict  # label, split, has_audio, audio_silent, n_frames, audio_len, duration, native_fps, source
    frames: np.ndarray | None = None  # (40, 224, 224, 3) uint8, zeros after n_frames
    audio: np.ndarray | None = None  # (160000,) float32, zeros after audio_len


def read_manifest(frames_dir: Path, k: int) -> dict | None:
    p = Path(frames_dir) / f"{shard_name(k)}.json"
    if not p.exists():
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def read_plan(frames_dir: Path) -> dict:
    p = Path(frames_dir) / "plan.json"
    if not p.exists():
        raise RuntimeError(f"{frames_dir} has no plan.json: run the frames stage first (`v2a stage frames`)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def iter_shard(frames_dir: Path, k: int, *, want_frames: bool = True, want_audio: bool = True,
               grid: ClipGrid | None = None, threads: int = 1):
    """Yield a :class:`ClipRecord` for every clip of shard ``k`` that was not rejected, in row order, its frames
    and audio padded to the clip grid's (``grid``; default: the grid the stage decoded on, read from plan.json,
    which lists every clip: pass it when reading many shards).

    ``threads`` > 1 decodes the clips' frames in parallel (PyAV releases the GIL while decoding).
    """
    frames_dir = Path(frames_dir)
    grid = grid or grid_of(read_plan(frames_dir)["params"])
    n_frames, n_samples = grid.n_frames, grid.n_samples
    manifest = read_manifest(frames_dir, k)
    if manifest is None:
        raise RuntimeError(f"shard {k} of {frames_dir} is not complete: rerun the frames stage")
    members: dict[str, bytes] = {}
    with tarfile.open(frames_dir / f"{shard_name(k)}.tar") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            wanted = (ext.startswith("frames") and want_frames) or (ext.startswith("audio") and want_audio)
            if wanted:
                members[m.name] = tar.extractfile(m).read()

    def load(rec: dict) -> ClipRecord:
        cid = rec["id"]
        frames = audio = None
        if want_frames:
            ext = rec["frames_ext"]
            got = decode_frames(members[f"{cid}.frames.{ext}"], ext)
            frames = np.zeros(grid.frame_shape, np.uint8)  # (T, S, S, 3), zeros after n_frames
            frames[: len(got)] = got[:n_frames]
        if want_audio:
            audio = np.zeros(n_samples, np.float32)
            if rec.get("audio_len", 0) > 0:
                key = f"{cid}.{AUDIO_KEY}" if f"{cid}.{AUDIO_KEY}" in members else f"{cid}.audio.flac"
                got, _ = decode_audio(members[key])
                audio[: len(got)] = got[:n_samples]
        return ClipRecord(index=rec["index"], id=cid, meta=rec, frames=frames, audio=audio)

    kept = [rec for rec in manifest["clips"] if not rec["status"]]
    if threads > 1 and len(kept) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(kept))) as pool:
            yield from pool.map(load, kept)
    else:
        yield from map(load, kept)


def load_clips(frames_dir: Path, rows: set[int], *, want_frames: bool = False,
               want_audio: bool = True) -> dict[int, ClipRecord]:
    """The stored clips of the given cache rows (rejected rows are absent), reading only the shards they are in."""
    plan = read_plan(frames_dir)  # once: it lists every clip
    s, grid = plan["shard_size"], grid_of(plan["params"])
    out: dict[int, ClipRecord] = {}
    for k in sorted({r // s for r in rows}):
        for rec in iter_shard(frames_dir, k, want_frames=want_frames, want_audio=want_audio, grid=grid):
            if rec.index in rows:
                out[rec.index] = rec
    return out
