"""``torchaudio.functional.resample`` in numpy: the frames stage's resampler, so that its worker processes never
import torch (importing torch cost each worker ~3.5 s of CPU, a third of the decode floor on a 42-clip folder).

Same algorithm and precision as :func:`frozen.resample.resample` on a float32 waveform (the kernel is built in the
waveform's dtype; see frozen/resample.py for the derivation): the n phase filters are applied to overlapping
blocks of the padded signal with one matrix product instead of a strided conv1d. The two agree to float32
rounding (a different summation order: tests/test_resample.py).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


def _reduced(orig_freq: int, new_freq: int) -> tuple[int, int]:
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"resample: rates must be positive integers, got {orig_freq} -> {new_freq}")
    g = math.gcd(int(orig_freq), int(new_freq))
    return int(orig_freq) // g, int(new_freq) // g


def _width(o: int, n: int, lowpass_filter_width: int, rolloff: float) -> int:
    """Input samples (at the reduced rate ``o``) each side of an output sample that its filter reaches."""
    return math.ceil(lowpass_filter_width * o / (min(o, n) * rolloff))


def input_needed(n_out: int, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                 rolloff: float = ROLLOFF) -> int:
    """How many input samples the first ``n_out`` output samples of :func:`resample` read: resampling a longer
    signal's first ``input_needed(...)`` samples gives the same first ``n_out`` outputs as resampling all of it.

    Output j comes from block b = j // n, which reads the inputs [b * o - width, b * o + width + o).
    """
    o, n = _reduced(orig_freq, new_freq)
    if n_out <= 0:
        return 0
    if o == n:
        return n_out
    return ((n_out - 1) // n) * o + _width(o, n, lowpass_filter_width, rolloff) + o


@lru_cache(maxsize=16)
def sinc_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                rolloff: float = ROLLOFF) -> tuple[np.ndarray, int]:
    """float32 phase filters (n, 2 * width + o) and ``width``, computed in float32 as torchaudio does for a
    float32 waveform. Read-only (cached)."""
    o, n = _reduced(orig_freq, new_freq)
    cutoff = min(o, n) * rolloff
    width = _width(o, n, lowpass_filter_width, rolloff)
    f32 = np.float32
    taps = np.arange(-width, width + o, dtype=f32) / f32(o)  # (K,) i / o
    phases = np.arange(0, -n, -1, dtype=f32)[:, None] / f32(n)  # (n, 1) -j / n
    t = (phases + taps[None]) * f32(cutoff)  # (n, K) in units of the cutoff period
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width).astype(f32)
    window = np.cos(t * f32(math.pi) / f32(lowpass_filter_width) / f32(2)) ** 2  # Hann over |t| <= w (torch's op order)
    t = t * f32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, f32(1.0), np.sin(t) / t)
    kernel = (kernel * (window * f32(cutoff / o))).astype(f32)
    kernel.setflags(write=False)
    return kernel, width


def resample(x: np.ndarray, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
             rolloff: float = ROLLOFF) -> np.ndarray:
    """(N,) float32 at ``orig_freq`` -> (ceil(new N / orig),) float32 at ``new_freq``."""
    o, n = _reduced(orig_freq, new_freq)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample: expected a 1-D waveform, got shape {x.shape}")
    if o == n:
        return x
    kernel, width = sinc_kernel(int(orig_freq), int(new_freq), lowpass_filter_width, rolloff)
    length = x.shape[0]
    padded = np.concatenate([np.zeros(width, np.float32), x, np.zeros(width + o, np.float32)])
    k = kernel.shape[1]
    blocks = (padded.shape[0] - k) // o + 1
    view = np.lib.stride_tricks.as_strided(padded, (blocks, k), (o * padded.strides[0], padded.strides[0]),
                                           writeable=False)  # (blocks, K): block b starts at sample b * o
    y = (view @ kernel.T).reshape(-1)  # (blocks * n,): phase-interleaved output, as conv1d + transpose
    target = int(math.ceil(np.float32(n * length / o)))  # rounded through float32, as torchaudio does
    return np.ascontiguousarray(y[:target])
