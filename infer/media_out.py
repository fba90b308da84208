"""What generation writes per clip: a 16 kHz wav and the source video with the generated soundtrack.

Muxing rules (``mux_audio``):

- The first video stream is copied packet by packet (no decode, no re-encode): its payload bytes are unchanged.
  Every other stream of the source (its original audio, subtitles, data) is dropped.
- The generated audio is encoded with the container's usual codec (``AUDIO_CODECS``: AAC for mp4/mov/mkv, Opus for
  webm, 16-bit PCM for avi: AVI cannot store an encoder delay, and its muxer would shift every stream to absorb
  MP3's negative start). It starts at the video stream's first presentation time and is cut to the video's
  duration (first pts to the end of the last frame). Audio shorter than the video is written as is (no padding).
- ``seconds`` (``--duration``) cuts the video too: only the frames shown before ``start + seconds`` are kept, as
  the decode-order prefix of packets that holds them all (a stream copy cannot cut inside a reordered group: with
  B-frames, one or two reference frames just past the cut may be kept, never a frame that cannot be decoded).
- The output container is the one of ``out_path``'s extension (``CONTAINERS``); the file is written atomically.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from v2a.io import atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
EVAL_SECONDS = 8.0  # MMAudio's av-benchmark evaluates the first 8 s (paper section 4.2)
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
AUDIO_CODECS = {"mp4": "aac", "mov": "aac", "matroska": "aac", "webm": "libopus", "avi": "pcm_s16le"}


def crop_audio(audio: np.ndarray, seconds: float | None = EVAL_SECONDS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first ``seconds`` of ``audio`` (last axis is time); ``None`` keeps everything. Shorter audio is kept as is."""
    if seconds is None:
        return audio
    if seconds <= 0:
        raise ValueError(f"crop seconds={seconds}: must be positive (or None for no crop)")
    return audio[..., : int(round(seconds * sample_rate))]


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
              subtype: str = "PCM_16") -> Path:
    """Write mono ``audio`` (samples,) float in [-1, 1] as a wav (atomic). Values outside [-1, 1] are clipped, with a
    warning, so that 16-bit files do not wrap around."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"write_wav expects mono audio of shape (samples,), got {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError(f"audio for {path} has NaN or inf values; refusing to write it")
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 1.0:
        log.warning("%s: peak %.3f > 1, clipping", path, peak)
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype=subtype, format="WAV")
    return Path(path)


def mux_audio(video_in: str | os.PathLike, audio: np.ndarray, out_path: str | os.PathLike, *,
              sample_rate: int = SAMPLE_RATE, codec: str | None = None, bitrate: int | None = None,
              seconds: float | None = None) -> dict:
    """Write ``out_path``: the video stream of ``video_in`` copied unchanged plus ``audio`` (samples,) as its only audio.
    ``seconds``: keep only the video's first ``seconds`` (from its first frame), audio cut to the same span.

    Returns {'video_start', 'video_duration', 'audio_seconds', 'codec', 'format'} (seconds; video_duration is the
    span written).
    """
    out_path = Path(out_path)
    fmt = CONTAINERS.get(out_path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot mux into {out_path.name!r}: use one of the extensions {sorted(CONTAINERS)}")
    codec = codec or AUDIO_CODECS[fmt]
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"mux_audio expects mono audio of shape (samples,), got {audio.shape}")

    if seconds is not None and not seconds > 0:
        raise ValueError(f"mux_audio seconds={seconds}: must be positive (or None for the whole video)")
    start, end = video_span(video_in)
    if seconds is not None:
        end = min(end, start + float(seconds))
    audio = np.clip(audio[: int(round((end - start) * sample_rate))], -1.0, 1.0)  # cut to the video's duration
    keep = _kept_packets(video_in, end) if seconds is not None else None
    with av.open(str(video_in)) as src, atomic_path(out_path) as tmp:
        vin = src.streams.video[0]
        with av.open(str(tmp), "w", format=fmt) as dst:
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream(codec, rate=_codec_rate(codec, sample_rate), layout="mono")
            if bitrate:
                aout.bit_rate = int(bitrate)
            audio_packets = _encode(aout, audio, sample_rate, start)  # [(time_s, packet)]
            pending = 0
            for k, packet in enumerate(_timed_packets(src, vin)):
                if keep is not None and k >= keep:
                    break  # every frame before the cut is written
                t = float((packet.dts if packet.dts is not None else packet.pts) * packet.time_base)
                while pending < len(audio_packets) and audio_packets[pending][0] <= t:
                    dst.mux(audio_packets[pending][1])
                    pending += 1
                packet.stream = vout
                dst.mux(packet)
            for _, packet in audio_packets[pending:]:
                dst.mux(packet)
    return {"video_start": start, "video_duration": end - start, "audio_seconds": len(audio) / sample_rate,
            "codec": codec, "format": fmt}


def _timed_packets(src, stream):
    """The stream's packets in decode order, without the demuxer's empty flush packets."""
    return (p for p in src.demux(stream) if p.size and (p.dts is not None or p.pts is not None))


def _kept_packets(path: str | os.PathLike, end: float) -> int:
    """How many video packets (decode order, flush packets skipped) hold every frame presented before ``end``."""
    last = -1
    with av.open(str(path)) as src:
        for k, packet in enumerate(_timed_packets(src, src.streams.video[0])):
            t = packet.pts if packet.pts is not None else packet.dts
            if float(t * packet.time_base) < end - 1e-6:
                last = k
    return last + 1


def video_span(path: str | os.PathLike) -> tuple[float, float]:
    """(first presentation time, end of the last frame) of the first video stream, in seconds, from its packets."""
    start, end = None, None
    with av.open(str(path)) as src:
        vin = src.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate
        for packet in src.demux(vin):
            if packet.pts is None:
                continue
            t0 = packet.pts * packet.time_base
            dur = packet.duration * packet.time_base if packet.duration else (1 / rate if rate else Fraction(0))
            start = t0 if start is None else min(start, t0)
            end = t0 + dur if end is None else max(end, t0 + dur)
    if start is None:
        raise ValueError(f"{path}: the video stream has no timed packets; cannot place a soundtrack")
    return float(start), float(end)


def _codec_rate(codec: str, sample_rate: int) -> int:
    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    return min((r for r in rates if r >= sample_rate), default=max(rates))


def _encode(stream, audio: np.ndarray, sample_rate: int, start: float) -> list:
    """Encode mono float ``audio`` with ``stream``'s codec; return [(dts in seconds, packet)] in decode order,
    shifted so that the first sample plays at ``start`` seconds."""
    ctx = stream.codec_context
    resampler = av.AudioResampler(format=ctx.format.name, layout="mono", rate=ctx.sample_rate,
                                  frame_size=ctx.frame_size or 1024)
    frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
    packets = []
    for chunk in resampler.resample(frame) + resampler.resample(None):
        packets += stream.encode(chunk)
    packets += stream.encode(None)
    offset = None
    out = []
    for packet in packets:
        tb = packet.time_base or stream.time_base
        if offset is None:
            offset = int(round(start / tb))
        if offset:
            packet.pts = None if packet.pts is None else packet.pts + offset
            packet.dts = None if packet.dts is None else packet.dts + offset
        dts = packet.dts if packet.dts is not None else packet.pts
        out.append((float(dts * tb), packet))
    return out
