"""Evaluation audio: files read as av-benchmark reads them, and the per-network inputs it prepares from them.

av-benchmark (MMAudio's evaluation code: ``av_bench/data/audio_dataset.py``, ``av_bench/extract.py``) reads every
audio file whole with ``torchaudio.load`` (all channels, float32 at the file's own rate) and then, per network:

==============  ================================================================================================
PANNs, VGGish   mean over channels -> minus its mean (whole file) -> ``transforms.Resample`` to 16 kHz -> first 8 s
PaSST           the same at 32 kHz (the file is read again: content up to 16 kHz kept) -> zero-padded to 10 s
Synchformer     mean over channels -> ``transforms.Resample`` to 16 kHz -> first 8 s (shorter: not scored)
ImageBind       ``functional.resample`` to 16 kHz, all channels, the whole file: three 2 s clips spread over the
                file (0/4/8 s for 10 s); each clip minus its mean (over all channels), fbank of channel 0
==============  ================================================================================================

:class:`ClipAudio` holds the decoded file and builds (and caches) those inputs; the resamplers are
frozen/resample.py's (torchaudio's numerics). An array given instead of a file is taken as 16 kHz mono, a tuple
``(array, sr)`` as audio at ``sr`` with shape (N,) or (N, channels).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from frozen.resample import resample as resample_functional
from frozen.resample import resample_like_transform
from scoring.params import EVAL_SR  # also scoring.audio.EVAL_SR

SOUNDFILE_EXTS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) float -> (N,) float32 (mean over channels)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"expected a waveform of shape (N,) or (N, channels), got {x.shape}")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(N,) float32 at ``sr_in`` -> ``sr_out`` with torchaudio's ``transforms.Resample`` numerics."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return resample_like_transform(torch.from_numpy(np.asarray(x, np.float32)), int(sr_in), int(sr_out)).numpy()


def _decode_av(path: Path) -> tuple[np.ndarray, int]:
    """Every channel of the first audio stream of a media file, float32 at its own rate (torchaudio.load's view)."""
    import av

    chunks, rate = [], 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            planar = av.AudioResampler(format="fltp", layout=None, rate=None)
            for frame in c.decode(c.streams.audio[0]):
                for f in planar.resample(frame):
                    rate = rate or int(f.sample_rate)
                    chunks.append(f.to_ndarray())  # (C, n)
            for f in planar.resample(None):
                chunks.append(f.to_ndarray())
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode audio of {path}: {e}") from e
    if not chunks:
        raise ValueError(f"{path} has no decodable audio")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A whole audio (or video) file as (channels (C, N) float32, sample rate), as ``torchaudio.load`` gives it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    if path.suffix.lower() in SOUNDFILE_EXTS:
        import soundfile as sf

        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C), integer PCM / 2^(bits-1)
        return np.ascontiguousarray(data.T), int(sr)
    return _decode_av(path)


class ClipAudio:
    """One clip's audio as read from its file, and the inputs av-benchmark prepares from it (cached)."""

    def __init__(self, channels: np.ndarray, sr: int):
        channels = np.asarray(channels, dtype=np.float32)
        if channels.ndim != 2 or channels.shape[1] == 0:
            raise ValueError(f"audio must be (channels, samples) with samples > 0, got {channels.shape}")
        self.channels, self.sr = channels, int(sr)  # (C, N)
        self._cache: dict[tuple, np.ndarray] = {}

    @classmethod
    def from_source(cls, src) -> "ClipAudio":
        """A path, a :class:`ClipAudio`, an (N,) array at 16 kHz, or ``(array (N,) | (N, C), sample_rate)``."""
        if isinstance(src, ClipAudio):
            return src
        if isinstance(src, (str, Path)):
            return cls(*read_audio(src))
        if isinstance(src, tuple) and len(src) == 2:
            x = np.asarray(src[0], np.float32)
            return cls(x[None] if x.ndim == 1 else x.T, int(src[1]))
        x = np.asarray(src, np.float32)
        if x.ndim != 1:
            raise ValueError(f"a bare array must be 16 kHz mono (N,), got shape {x.shape}; pass (array, sr)")
        return cls(x[None], EVAL_SR)

    def samples_at(self, sr: int) -> int:
        """How many samples the clip has once resampled to ``sr`` (ceil, as the resampler gives)."""
        return -(-sr * self.channels.shape[1] // self.sr)

    @property
    def duration(self) -> float:
        return self.channels.shape[1] / self.sr

    @cached_property
    def _mono(self) -> torch.Tensor:
        return torch.from_numpy(self.channels).mean(dim=0)  # (N,) as waveform.mean(dim=0)

    def av_input(self, sr: int, seconds: float) -> np.ndarray:
        """PANNs/VGGish (16 kHz) and PaSST (32 kHz): mono mean, whole-file DC removed, Resample, first ``seconds``."""
        key = ("av", sr, seconds)
        if key not in self._cache:
            x = self._mono - self._mono.mean()
            x = resample_like_transform(x, self.sr, sr) if sr != self.sr else x
            self._cache[key] = x[: int(sr * seconds)].numpy()
        return self._cache[key]

    def sync_input(self, seconds: float) -> np.ndarray:
        """Synchformer: mono mean, Resample to 16 kHz, first ``seconds`` (no DC removal)."""
        key = ("sync", seconds)
        if key not in self._cache:
            x = resample_like_transform(self._mono, self.sr, EVAL_SR) if self.sr != EVAL_SR else self._mono
            self._cache[key] = x[: int(EVAL_SR * seconds)].numpy()
        return self._cache[key]

    def ib_input(self) -> np.ndarray:
        """ImageBind: every channel, ``functional.resample`` to 16 kHz, the whole file: (C, N16) float32."""
        if "ib" not in self._cache:
            x = torch.from_numpy(self.channels)
            self._cache["ib"] = (resample_functional(x, self.sr, EVAL_SR) if self.sr != EVAL_SR else x).numpy()
        return self._cache["ib"]


def load_audio(src, sr: int = EVAL_SR) -> np.ndarray:
    """``src`` (see :meth:`ClipAudio.from_source`) -> mono float32 at ``sr``, the whole file (gallery pictures)."""
    clip = ClipAudio.from_source(src)
    x = clip._mono.numpy()
    return resample(x, clip.sr, sr)


def crop(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n]


def pad_or_crop(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def remove_dc(x: np.ndarray) -> np.ndarray:
    """Subtract the mean (av-benchmark does this after reading every file)."""
    return (x - x.mean()).astype(np.float32) if x.size else x
