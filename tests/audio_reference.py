"""Independent reference evaluations shared by the audio tests (plain numpy float64, no project code)."""

from __future__ import annotations

import math

import numpy as np


def windowed_sinc(x: np.ndarray, orig: int, new: int, js=None, *, w: int = 6, rolloff: float = 0.99,
                  f32_phase: bool = False) -> np.ndarray:
    """torchaudio's resampling formula evaluated directly, output sample by output sample:

        y[j] = sum_i x[i] (b/o) sinc(b t) cos^2(pi b t / 2w),  t = i/o - j/n,  |b t| <= w,

    o, n the rates divided by their gcd, b = rolloff * min(o, n), x zero outside the signal; ``js`` the output
    indices (default: all ceil(n N / o) of them). ``f32_phase``: the phase (j mod n) / n rounded to float32 first,
    as ``torchaudio.transforms.Resample`` computes it.
    """
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    b = min(o, n) * rolloff
    js = np.arange(math.ceil(n * len(x) / o)) if js is None else np.asarray(js)
    half = int(math.ceil(w / b * o)) + 1  # input samples on each side within the window
    out = np.empty(len(js))
    for k, j in enumerate(js):
        phase = (j % n) / n
        if f32_phase:
            phase = float(np.float32(phase))
        centre = (j // n) * o  # input index of the block start
        i = np.arange(max(0, centre - half), min(len(x), centre + o + half))
        u = b * ((i - centre) / o - phase)
        h = (b / o) * np.sinc(u) * np.cos(np.pi * u / (2 * w)) ** 2 * (np.abs(u) <= w)
        out[k] = h @ x[i].astype(np.float64)
    return out
