"""Waveform helpers for evaluation: read, mono, resample (scipy ``resample_poly``), crop/pad, spectrogram image."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

EVAL_SR = 16000


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) float -> (N,) float32 (mean over channels)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"expected a waveform of shape (N,) or (N, channels), got {x.shape}")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling with scipy (Kaiser window) by the exact rational factor sr_out/sr_in."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    frac = Fraction(int(sr_out), int(sr_in))
    return signal.resample_poly(np.asarray(x, np.float64), frac.numerator, frac.denominator).astype(np.float32)


def read_wav(path: str | Path, sr: int = EVAL_SR) -> np.ndarray:
    """Read an audio file as mono float32 at ``sr`` (resampled when the file has another rate)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    data, file_sr = sf.read(str(path), dtype="float32", always_2d=False)
    return resample(to_mono(data), int(file_sr), sr)


def load_audio(src, sr: int = EVAL_SR) -> np.ndarray:
    """``src`` is a path, an array at ``sr``, or a tuple ``(array, its_sample_rate)`` -> mono float32 at ``sr``."""
    if isinstance(src, (str, Path)):
        return read_wav(src, sr)
    if isinstance(src, tuple) and len(src) == 2:
        return resample(to_mono(src[0]), int(src[1]), sr)
    return to_mono(src)


def crop(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n]


def pad_or_crop(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def remove_dc(x: np.ndarray) -> np.ndarray:
    """Subtract the mean (av-benchmark does this after reading every file)."""
    return (x - x.mean()).astype(np.float32) if x.size else x
