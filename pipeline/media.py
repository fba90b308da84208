"""Decode one clip into the frames stage's fixed-size arrays on its clip grid (frozen/grid.py): by default 40 RGB
frames at 4 FPS (224x224) and 10 s of 16 kHz audio.

Rules (docs/CONTRACTS.md):

- **Timestamp rule.** Frame i is the frame *displayed* at t_i = i / fps seconds: the last decoded frame whose
  presentation time (pts relative to the video stream's ``start_time``; the first frame's pts when the stream has
  none) is <= t_i. A target before the first frame takes the first frame. Only targets t_i < min(duration, seconds)
  are filled (``n_frames``); the rest stay zero. ``duration`` of the decoded part is last pts + frame duration.
- **Resize.** Only kept frames are converted, with one swscale call per frame: YUV -> planar RGB at
  ``size`` x ``size`` (no crop, no aspect preservation), ``BILINEAR | ACCURATE_RND | FULL_CHR_H_INT``. swscale's
  bilinear widens its kernel when shrinking, like PIL's ``Image.resize(BILINEAR)`` that torchvision's ``Resize``
  applies to PIL images; with accurate full-chroma conversion the result is within ~0.7 grey levels (mean abs) of
  "accurate RGB at native size, then PIL bilinear". ``resize="via_rgb"`` reproduces ``frame.to_image()`` (swscale's
  fast default conversion, ~+1 level brighter) then a bilinear resize: within ~0.3 levels of
  ``to_image().resize((224, 224), BILINEAR)``, at ~3x the conversion cost.
- **Audio** (as AudioLDM-2's ``read_wav_file`` reads audio: ``torchaudio.load`` -> ``functional.resample`` of the
  whole file -> channel 0 -> cut or zero-pad to the clip length). The first audio stream is decoded to float32 at
  its own rate (no swresample rate conversion, no downmix); the *first channel* is resampled to ``sample_rate``
  with torchaudio's windowed-sinc resampler (``functional.resample`` numerics, in numpy: frozen/resample_np.py),
  then cut to ``seconds``: the stored samples, the last ones included, are those of the whole stream resampled.
  Only as much of the stream is decoded as those samples read (the clip plus the filter's reach, a few
  milliseconds: ``resample_np.input_needed``); zeros only follow the stream's real end. Nothing is clipped:
  decoders overshoot full scale on loud clips and the AudioMAE target normalises by the peak, so samples beyond
  [-1, 1] are kept (``audio_peak_dbfs`` may be above 0). ``audio_silent`` = peak below ``silence_dbfs`` (True
  without audio). The audio stream's first decoded sample is sample 0 (encoder priming removed by the decoder);
  gaps inside the stream are not filled. The offset of the audio stream's start relative to the video stream's
  start is reported as ``audio_offset`` (seconds) and not applied, unless ``align_audio=True``: then sample 0 is at
  video time 0 (a late audio start is zero-padded, an early one cut, at the stream's rate before resampling).
- Decoding stops once every target frame is known and the audio the clip's samples read is in hand;
  non-reference frames that no target shows are not decoded at all (pipeline/frameskip.py: same frames, ~40 %
  less H.264 decoding).
- Determinism: packets are decoded once in order; the same file gives the same bytes every time on one machine
  (swscale's SIMD paths may differ by a grey level across CPU types).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import av.logging
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from frozen.grid import ClipGrid
from frozen.resample_np import input_needed, resample
from pipeline.frameskip import SkipPlanner

log = logging.getLogger(__name__)

_MAGIC = (  # container signatures: such a file that fails to open or ends early is "truncated"
    (4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),
    (0, b"FLV"), (0, b"OggS"), (0, b"\x30\x26\xb2\x75"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),
)


class MediaError(Exception):
    """A clip that cannot be used; ``reason`` is short and machine-usable (``truncated``, ``decode_error: ...``)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason if not detail else f"{reason} ({detail})")
        self.reason, self.detail = reason, detail
        self.detail = detail


@dataclass
class DecodedClip:
    frames: np.ndarray  # (n_target, size, size, 3) uint8 RGB, zero after n_frames
    n_frames: int
    audio: np.ndarray  # (seconds * sample_rate,) float32, not clipped (may exceed [-1, 1]), zero after audio_len
    audio_len: int
    has_audio: bool
    audio_silent: bool  # peak below silence_dbfs (True when there is no audio)
    duration: float  # seconds of video (container/stream metadata when decoding stopped early)
    native_fps: float
    width: int
    height: int
    video_codec: str
    container: str
    audio_offset: float = 0.0  # audio stream start minus video stream start, seconds
    audio_peak_dbfs: float = -math.inf
    frame_times: list[float] = field(default_factory=list)  # pts time of the source frame kept for each target
    decode_errors: int = 0  # corrupt packets skipped


@dataclass
class ProbeInfo:
    container: str
    duration: float  # seconds, 0.0 when unknown
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    native_fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    audio_sample_rate: int = 0
    audio_channels: int = 0


Source = str | os.PathLike | BinaryIO | bytes


def _check_nonempty(src: Source) -> Source:
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(bytes(src))
    if isinstance(src, (str, os.PathLike)):
        if not os.path.exists(src):
            raise FileNotFoundError(f"video {src} does not exist")
        if os.path.getsize(src) == 0:
            raise MediaError("empty_file")
        return src
    pos = src.tell()
    empty = src.read(1) == b""
    src.seek(pos)
    if empty:
        raise MediaError("empty_file")
    return src


def _head(src: Source, n: int = 16) -> bytes:
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return f.read(n)
    pos = src.tell()
    data = src.read(n)
    src.seek(pos)
    return data


def _looks_like_container(head: bytes) -> bool:
    if head[:1] == b"\x47":  # MPEG-TS sync byte
        return True
    return any(head[o:o + len(m)] == m for o, m in _MAGIC)


def _open(src: Source) -> av.container.InputContainer:
    src = _check_nonempty(src)
    try:
        return av.open(src, mode="r")
    except av.FFmpegError as e:
        reason = "truncated" if _looks_like_container(_head(src)) else "not_a_video"
        raise MediaError(reason, f"{type(e).__name__}: {e}") from None


def _stream_duration(stream) -> float:
    """Seconds of a stream from its own metadata (0.0 when unknown)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:  # matroska writes "HH:MM:SS.nnnnnnnnn" per track
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            pass
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return 0.0


def _container_duration(container) -> float:
    return float(container.duration / av.time_base) if container.duration else 0.0


def _fps(stream) -> float:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def probe(path: Source) -> ProbeInfo:
    """Cheap metadata from the container headers (no decoding). Raises ``MediaError`` like ``decode_clip``."""
    with _open(path) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        info = ProbeInfo(container=c.format.name, duration=_container_duration(c), has_video=v is not None,
                         has_audio=a is not None)
        if v is not None:
            info.width, info.height = v.codec_context.width, v.codec_context.height
            info.native_fps, info.video_codec = _fps(v), v.codec_context.name
            info.duration = _stream_duration(v) or info.duration
        if a is not None:
            info.audio_codec = a.codec_context.name
            info.audio_sample_rate = a.codec_context.sample_rate or 0
            info.audio_channels = a.codec_context.channels or 0
        return info


class _FramePicker:
    """Keeps, for each target time, the frame displayed then; converts only those frames."""

    def __init__(self, targets: list[float], size: int, resize: str):
        self.targets = targets
        self.size = size
        self.resize = resize
        self.scale_threads = 1  # small outputs: threading swscale costs more than it gains
        self.out = np.zeros((len(targets), size, size, 3), np.uint8)  # (T, H, W, 3)
        self.times = [0.0] * len(targets)
        self.next = 0  # first target not yet assigned
        self.prev = None  # (time, frame) of the last decoded frame
        self._to_rgb = VideoReformatter()
        self._scale = VideoReformatter()

    @property
    def done(self) -> bool:
        return self.next >= len(self.targets)

    def _convert_into(self, frame, dst: np.ndarray) -> None:
        """Scale and convert ``frame`` into ``dst`` (size, size, 3) RGB."""
        s, th = self.size, self.scale_threads
        if self.resize == "direct":
            flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
            # gbrp: same bytes as rgb24 with these flags, faster; its G, B, R planes are copied straight into the
            # output's channels (to_ndarray() would build an (H, W, 3) array first)
            g = self._to_rgb.reformat(frame, s, s, "gbrp", interpolation=flags, threads=th)
            for channel, plane in zip((1, 2, 0), g.planes):
                dst[:, :, channel] = np.frombuffer(plane, np.uint8).reshape(s, plane.line_size)[:, :s]
            return
        rgb = self._to_rgb.reformat(frame, format="rgb24", threads=th)  # what frame.to_image() gives
        flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
        dst[...] = self._scale.reformat(rgb, s, s, interpolation=flags, threads=th).to_ndarray()

    def _assign_prev_until(self, limit: float) -> None:
        """Targets with time < limit are shown the previous frame."""
        t_prev, f_prev = self.prev
        first = None
        while self.next < len(self.targets) and self.targets[self.next] < limit:
            if first is None:
                self._convert_into(f_prev, self.out[self.next])  # (H, W, 3)
                first = self.next
            else:
                self.out[self.next] = self.out[first]
            self.times[self.next] = t_prev
            self.next += 1

    def push(self, t: float, frame) -> None:
        if self.prev is None:
            self.prev = (t, frame)
            return
        if t <= self.prev[0]:  # non-increasing pts: keep the later frame in decode order for the same instant
            self.prev = (max(t, self.prev[0]), frame)
            return
        self._assign_prev_until(t)
        self.prev = (t, frame)

    def finish(self, end: float) -> int:
        """End of video at ``end`` seconds: assign the remaining targets before it; returns n_frames."""
        if self.prev is not None and not self.done:
            self._assign_prev_until(end)
        return self.next


MIN_SIDE, MAX_PIXELS = 16, 40_000_000  # the smallest side and the most pixels a frame may have


def check_dimensions(w: int, h: int, *, max_side: int, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> None:
    """``absurd_dimensions`` (MediaError, with the numbers) for a frame size outside the allowed range."""
    _check_dims(w, h, min_side=min_side, max_side=max_side, max_pixels=max_pixels)


def _check_dims(w: int, h: int, *, min_side: int, max_side: int, max_pixels: int) -> None:
    if w and h and (min(w, h) < min_side or max(w, h) > max_side or w * h > max_pixels):
        raise MediaError("absurd_dimensions",
                         f"{w}x{h}; allowed sides {min_side}..{max_side}, at most {max_pixels} pixels")


class _VideoClock:
    """Presentation time (s) of decoded frames relative to the stream start, in exact integer arithmetic
    (a frame exactly at a target time t_i compares equal to it)."""

    def __init__(self, stream, fallback_fps: float):
        tb = stream.time_base
        self.num, self.den = tb.numerator, tb.denominator
        self.start = stream.start_time  # in time_base units; None -> the first frame's pts
        self.step = 1.0 / fallback_fps
        self.last: float | None = None
        self.last_dur = 0.0

    def time(self, frame) -> float:
        if frame.pts is not None:
            if self.start is None:
                self.start = frame.pts
            t = ((frame.pts - self.start) * self.num) / self.den  # int / int: correctly rounded
        else:
            t = self.last + (self.last_dur or self.step) if self.last is not None else 0.0
        self.last_dur = (frame.duration * self.num) / self.den if frame.duration else self.step
        self.last = t if self.last is None else max(t, self.last)
        return t

    @property
    def end(self) -> float:
        return self.last + self.last_dur

    @property
    def start_seconds(self) -> float | None:
        return (self.start * self.num) / self.den if self.start is not None else None


class _AudioCollector:
    """Decoded audio -> the first channel as float32 at the stream's own rate, until ``need(rate)`` samples are in
    hand. Resampling happens once, on the whole kept signal (:func:`_to_rate`)."""

    def __init__(self, stream, need):
        self.stream = stream
        self.need = need  # rate -> samples at that rate to decode
        self.resampler = av.AudioResampler(format="fltp", layout=None, rate=None)  # planar float, rate and layout kept
        self.chunks: list[np.ndarray] = []
        self.count = 0
        self.rate = 0
        self.first_time: float | None = None

    @property
    def done(self) -> bool:
        return self.rate > 0 and self.count >= self.need(self.rate)

    def _add(self, frames) -> None:
        for rf in frames:
            if not self.rate:
                self.rate = int(rf.sample_rate)
            # channel 0 (AudioLDM-2's waveform[0]) straight from the first plane of the planar float frame, copied
            # (to_ndarray() would stack every channel first)
            x = np.frombuffer(rf.planes[0], dtype=np.float32, count=rf.samples).copy()
            self.chunks.append(x)
            self.count += x.shape[0]

    def push(self, frame) -> None:
        if self.first_time is None and frame.time is not None:
            self.first_time = float(frame.time)
        self._add(self.resampler.resample(frame))

    def finish(self) -> tuple[np.ndarray, int]:
        """-> (first channel at the stream's rate, that rate)."""
        self._add(self.resampler.resample(None))
        x = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return x, self.rate or int(self.stream.codec_context.sample_rate or 0)


def _to_rate(x: np.ndarray, rate: int, sample_rate: int, n_samples: int, shift_s: float | None) -> np.ndarray:
    """Stream-rate channel 0 -> its first ``n_samples`` at ``sample_rate`` (optionally shifted by ``shift_s``):
    the stream resampled, then cut (AudioLDM-2's order), so the last samples see the audio after the cut."""
    if shift_s is not None and x.size:
        shift = int(round(shift_s * rate))
        x = np.concatenate([np.zeros(shift, np.float32), x]) if shift > 0 else x[-shift:]
    if x.size and rate != sample_rate:
        x = resample(x[: input_needed(n_samples, rate, sample_rate)], rate, sample_rate)  # all the clip reads
    return x[:n_samples]


def _decode_packet(packet, errors: list[str]) -> list:
    try:
        return packet.decode()
    except av.error.InvalidDataError as e:  # a corrupt packet: skipped and counted
        errors.append(f"{type(e).__name__}: {e}")
        return []


_INVALID_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")


def decode_clip(src: Source, **kw) -> DecodedClip:
    """:func:`_decode_clip` (its arguments and rules); a clip whose stream header declares a size FFmpeg will not
    decode is ``absurd_dimensions`` with that size (:func:`declared_size`), not ``truncated`` or a decode error."""
    try:
        return _decode_clip(src, **kw)
    except MediaError as e:
        if e.reason == "absurd_dimensions" or not (e.reason == "truncated" or e.reason.startswith("decode_error")):
            raise
        size = declared_size(src)
        if size is None:
            raise
        raise MediaError("absurd_dimensions", f"{size[0]}x{size[1]} declared in the stream's header, a size FFmpeg "
                                              f"refuses to decode (it said: {e.reason})") from None


def declared_size(src: Source, packets: int = 8) -> tuple[int, int] | None:
    """The size a video stream's header declares when FFmpeg refuses it (``Picture size WxH is invalid``), else None.

    FFmpeg says it only in its log, which PyAV drops unless a level is set; forwarding it while FFmpeg's own threads
    decode can deadlock (PyAV's docs), so this decodes the first ``packets`` packets again on this thread alone."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(bytes(src))
    if not isinstance(src, (str, os.PathLike)):
        src.seek(0)
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the same message from an earlier clip must be seen again
    try:
        with av.logging.Capture(local=True) as logs, av.open(src, mode="r") as c:
            if not c.streams.video:
                return None
            vs = c.streams.video[0]
            vs.thread_type, vs.codec_context.thread_count = "SLICE", 1  # no decoder threads: logs come here
            for i, packet in enumerate(c.demux(vs)):
                if i >= packets:
                    break
                try:
                    packet.decode()
                except av.FFmpegError:
                    pass
    except (av.FFmpegError, OSError):
        return None
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    found = [m for _, _, text in logs for m in [_INVALID_SIZE.search(text)] if m]
    return (int(found[0].group(1)), int(found[0].group(2))) if found else None


def _decode_clip(src: Source, *, fps: int = 4, seconds: float = 10.0, size: int = 224, sample_rate: int = 16_000,
                max_side: int = 8192, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS, threads: int = 0,
                silence_dbfs: float = -60.0, resize: str = "direct", align_audio: bool = False,
                max_decode_errors: int = 8, truncation_tolerance: float = 0.5,
                skip_unneeded: bool = True) -> DecodedClip:
    """Decode ``src`` (path, file object or bytes) into ``fps * seconds`` frames and ``seconds`` of audio.

    Raises ``MediaError`` with ``reason`` in: ``empty_file``, ``not_a_video``, ``truncated``, ``no_video_stream``,
    ``zero_frames``, ``absurd_dimensions``, ``decode_error: ...``. See the module docstring for the rules.
    ``skip_unneeded``: leave non-reference frames that no target shows undecoded (pipeline/frameskip.py; the
    result is the same).
    """
    if resize not in ("direct", "via_rgb"):
        raise ValueError(f"resize must be 'direct' or 'via_rgb', got {resize!r}")
    grid = ClipGrid(fps=fps, seconds=seconds, size=size, sample_rate=sample_rate)
    n_target, n_samples = grid.n_frames, grid.n_samples
    targets = grid.frame_times()  # t_i = i / fps
    margin = 1.0 if align_audio else 0.0  # seconds of audio that a shift may bring into the clip

    def audio_needed(rate: int) -> int:
        """Samples at the stream's rate that the clip's n_samples read once resampled (+ the shift margin)."""
        return input_needed(n_samples, rate, sample_rate) + int(math.ceil(margin * rate))

    with _open(src) as c:
        # 1. streams and cheap checks
        if not c.streams.video:
            raise MediaError("no_video_stream" if c.streams.audio else "not_a_video",
                             f"container {c.format.name} has no video stream")
        vs = c.streams.video[0]
        cc = vs.codec_context
        _check_dims(cc.width, cc.height, min_side=min_side, max_side=max_side, max_pixels=max_pixels)
        vs.thread_type = "AUTO"
        cc.thread_count = threads
        a_s = c.streams.audio[0] if c.streams.audio else None
        native_fps = _fps(vs)
        a_start = float(a_s.start_time * a_s.time_base) if a_s is not None and a_s.start_time is not None else None

        # 2. demux once, in order; decode until every target frame and enough audio are known
        picker = _FramePicker(targets, size, resize)
        audio = _AudioCollector(a_s, audio_needed) if a_s is not None else None
        clock = _VideoClock(vs, native_fps or fps)
        errors: list[str] = []
        n_decoded = 0
        streams = [vs] + ([a_s] if a_s is not None else [])
        # non-reference frames exist only where frames are reordered (B-frames): elsewhere (VP9, MPEG-4 Part 2 without
        # B-frames, intra-only) the planner's lookahead would cost time and skip nothing
        skip = SkipPlanner(vs, targets) if skip_unneeded and cc.has_b_frames else None
        try:
            for packet in c.demux(streams) if skip is None else skip.packets(c.demux(streams)):
                if packet.stream is vs:
                    if picker.done:
                        continue
                    if skip is not None:
                        cc.skip_frame = "NONREF" if not errors and skip.unneeded(packet) else "DEFAULT"
                    for frame in _decode_packet(packet, errors):
                        if n_decoded == 0:
                            _check_dims(frame.width, frame.height, min_side=min_side, max_side=max_side,
                                        max_pixels=max_pixels)
                        n_decoded += 1
                        t = clock.time(frame)
                        picker.push(t, frame)
                        if picker.done:
                            break
                elif audio is not None and not audio.done:
                    for frame in _decode_packet(packet, errors):
                        audio.push(frame)
                if len(errors) > max_decode_errors:
                    raise MediaError(f"decode_error: {len(errors)} corrupt packets", errors[0])
                if picker.done and (audio is None or audio.done):
                    break
        except av.FFmpegError as e:
            raise MediaError(f"decode_error: {type(e).__name__}: {e}") from None

        # 3. frames: how many targets lie inside the video, and is the file cut short?
        if n_decoded == 0:
            raise MediaError("truncated" if errors else "zero_frames",
                             f"no video frame decoded ({len(errors)} corrupt packets)")
        decoded_end, v_start = clock.end, clock.start_seconds
        meta_dur, tol = _stream_duration(vs), truncation_tolerance
        if not meta_dur:  # the container's duration also covers the audio: allow more slack
            meta_dur, tol = _container_duration(c), 2 * truncation_tolerance
        if picker.done:
            n_frames, duration = n_target, max(meta_dur, _container_duration(c) if not meta_dur else 0.0,
                                               decoded_end)
        else:
            n_frames = picker.finish(min(decoded_end, seconds))
            duration = decoded_end
            if meta_dur and decoded_end < min(meta_dur, seconds) - tol:
                raise MediaError("truncated", f"video ends at {decoded_end:.2f} s, its header says {meta_dur:.2f} s")
        if n_frames == 0:
            raise MediaError("zero_frames", f"video lasts {decoded_end:.3f} s")

        # 4. audio: channel 0 resampled to sample_rate, first `seconds` of the stream (or aligned to the video start)
        wave = np.zeros(n_samples, np.float32)
        audio_len, offset = 0, 0.0
        if audio is not None:
            x, rate = audio.finish()
            if a_start is None:
                a_start = audio.first_time
            if a_start is not None and v_start is not None:
                offset = a_start - v_start
            x = _to_rate(x, rate, sample_rate, n_samples, offset if align_audio else None)
            audio_len = min(int(x.size), n_samples)
            wave[:audio_len] = x[:audio_len]  # not clipped: the gain beyond full scale is kept
        peak = float(np.abs(wave[:audio_len]).max()) if audio_len else 0.0
        peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf

        return DecodedClip(
            frames=picker.out, n_frames=n_frames, audio=wave, audio_len=audio_len, has_audio=audio_len > 0,
            audio_silent=peak_db < silence_dbfs, duration=float(duration), native_fps=native_fps,
            width=int(cc.width or picker.prev[1].width), height=int(cc.height or picker.prev[1].height),
            video_codec=cc.name, container=c.format.name, audio_offset=float(offset), audio_peak_dbfs=peak_db,
            frame_times=picker.times[:n_frames], decode_errors=len(errors))
