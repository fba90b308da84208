"""Band-limited (windowed-sinc) resampling, numerically as torchaudio does it, in plain torch.

torchaudio has no release for this project's torch, and both references resample with it: AudioLDM-2 reads its
training audio with ``torchaudio.functional.resample`` and av-benchmark prepares every metric's audio with
``torchaudio.transforms.Resample`` (ImageBind's with the functional form). The algorithm (Julius O. Smith's
band-limited interpolation, torchaudio's defaults) is re-derived here:

* reduce the rates by their gcd: ``o = orig // g``, ``n = new // g``; cutoff ``b = rolloff * min(o, n)``
  (rolloff 0.99: the anti-aliasing filter sits 1% below the lower Nyquist frequency);
* output sample j sits at time j / n, input sample i at i / o (in units of 1 / g seconds). With t = i / o - j / n,
  y[j] = sum_i x[i] * (b / o) * sinc(pi b t) * cos^2(pi b t / (2 w)) over |b t| <= w, w = lowpass_filter_width (6),
  a Hann window on the sinc; x is zero outside the signal;
* y[j + n] uses the same weights as y[j] on x shifted by o, so the n phase filters (each 2 * width + o taps,
  width = ceil(w o / b)) run as one strided conv1d; the output has ceil(n * N / o) samples (rounded through a
  float32 tensor, as torchaudio does).

Kernel precision: :func:`resample` (``torchaudio.functional.resample``) builds the kernel in the waveform's dtype;
:class:`Resample` (``torchaudio.transforms.Resample``, ``dtype=None``) builds it in float64 (the phase offsets
j / n in float32, as torchaudio's integer ``arange`` divides to the default dtype) and stores it as float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


def _check_rates(orig_freq: int, new_freq: int) -> None:
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"resample: rates must be positive integers, got {orig_freq} -> {new_freq}")


def sinc_kernel(orig_freq: int, new_freq: int, *, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                rolloff: float = ROLLOFF, dtype: torch.dtype | None = None,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """Phase filters (n, 1, 2 * width + o) and ``width``; ``dtype=None``: float64 maths, float32 result."""
    _check_rates(orig_freq, new_freq)
    if lowpass_filter_width <= 0:
        raise ValueError(f"resample: lowpass_filter_width must be positive, got {lowpass_filter_width}")
    g = math.gcd(int(orig_freq), int(new_freq))
    o, n = int(orig_freq) // g, int(new_freq) // g
    cutoff = min(o, n) * rolloff
    width = math.ceil(lowpass_filter_width * o / cutoff)
    taps = torch.arange(-width, width + o, dtype=dtype or torch.float64, device=device) / o  # (K,) i / o
    # torchaudio: an integer arange divided by n gives the default dtype (float32) when dtype is None
    phases = torch.arange(0, -n, -1, device=device) if dtype is None else torch.arange(0, -n, -1, dtype=dtype, device=device)
    t = phases[:, None, None] / n + taps[None, None]  # (n, 1, K): i / o - j / n
    t = (t * cutoff).clamp_(-lowpass_filter_width, lowpass_filter_width)  # in units of the cutoff period
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2  # Hann over |t| <= w
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=t.dtype, device=device), t.sin() / t)
    kernel = kernel * (window * (cutoff / o))
    return (kernel.to(torch.float32) if dtype is None else kernel), width


def apply_kernel(wave: torch.Tensor, orig_freq: int, new_freq: int, kernel: torch.Tensor, width: int) -> torch.Tensor:
    """(..., N) float -> (..., ceil(n N / o)) with the phase filters of :func:`sinc_kernel`."""
    if not wave.is_floating_point():
        raise TypeError(f"resample: the waveform must be floating point, got {wave.dtype}")
    g = math.gcd(int(orig_freq), int(new_freq))
    o, n = int(orig_freq) // g, int(new_freq) // g
    shape = wave.shape
    x = wave.reshape(-1, shape[-1])  # (B, N)
    length = x.shape[-1]
    x = F.pad(x, (width, width + o))  # zeros outside the signal, plus one block for the last phases
    y = F.conv1d(x[:, None], kernel.to(device=x.device, dtype=x.dtype), stride=o)  # (B, n, blocks)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (B, blocks * n): phase-interleaved output
    target = int(torch.ceil(torch.as_tensor(n * length / o, dtype=torch.float32)))
    return y[:, :target].reshape(shape[:-1] + (min(target, y.shape[1]),))


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int, *,
             lowpass_filter_width: int = LOWPASS_FILTER_WIDTH, rolloff: float = ROLLOFF) -> torch.Tensor:
    """``torchaudio.functional.resample`` (sinc_interp_hann): the kernel is built in ``wave``'s dtype."""
    _check_rates(orig_freq, new_freq)
    if orig_freq == new_freq:
        return wave
    kernel, width = sinc_kernel(orig_freq, new_freq, lowpass_filter_width=lowpass_filter_width, rolloff=rolloff,
                                dtype=wave.dtype, device=wave.device)
    return apply_kernel(wave, orig_freq, new_freq, kernel, width)


class Resample(nn.Module):
    """``torchaudio.transforms.Resample(orig_freq, new_freq)`` with its defaults: the kernel computed once in
    float64 and kept as a float32 buffer."""

    def __init__(self, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                 rolloff: float = ROLLOFF):
        super().__init__()
        _check_rates(orig_freq, new_freq)
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        self.width = 0
        if self.orig_freq != self.new_freq:
            kernel, self.width = sinc_kernel(orig_freq, new_freq, lowpass_filter_width=lowpass_filter_width,
                                             rolloff=rolloff)
            self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.orig_freq == self.new_freq:
            return wave
        return apply_kernel(wave, self.orig_freq, self.new_freq, self.kernel, self.width)


_CACHE: dict[tuple[int, int], Resample] = {}


def resample_like_transform(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """What a cached ``torchaudio.transforms.Resample(orig_freq, new_freq)`` gives (av-benchmark's loaders)."""
    key = (int(orig_freq), int(new_freq))
    if key not in _CACHE:
        _CACHE[key] = Resample(*key)
    return _CACHE[key](wave)
