"""Kaldi-compatible log mel filterbank, batched in torch (CPU or GPU).

It reproduces ``torchaudio.compliance.kaldi.fbank`` (and Kaldi's ``compute-fbank-feats``) for the options
AudioLDM-2 uses in front of AudioMAE (docs/../shared/reference/MODELS.md section 4), without torchaudio:

    per frame of 25 ms every 10 ms (``snip_edges``: only frames that fit completely)
      -> remove the frame's DC offset -> pre-emphasis x[i] -= 0.97 x[i-1] (x[0] -= 0.97 x[0])
      -> window (symmetric Hann, "hanning"; Kaldi's "povey" is Hann ** 0.85)
      -> zero-pad to the next power of two (400 -> 512) -> |rfft|^2
      -> triangular mel filters (mel = 1127 ln(1 + f / 700), equally spaced in mel between low and high
         frequency, no area normalisation, the Nyquist bin unused)
      -> log(max(energy, float32 epsilon))

The waveform is taken as is (no 32768 int16 scaling), like torchaudio and kaldi-native-fbank's Python API;
dither is not supported (AudioLDM-2 uses 0) so the result is deterministic. ``htk_compat`` only moves the energy
column, and ``use_energy`` is off, so neither appears here.

    fbank(wave (B, N) float32) -> (B, T, num_mel_bins), T = 1 + (N - 400) // 160 with the defaults
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920928955078125e-07, Kaldi's log floor


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank options (defaults: AudioLDM-2's AudioMAE front end)."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "hanning"  # "hanning" | "povey" | "hamming" | "rectangular"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist (0 = Nyquist)
    round_to_power_of_two: bool = True

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms * 0.001)  # 400 samples

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms * 0.001)  # 160 samples

    @property
    def n_fft(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n  # 512

    def num_frames(self, num_samples: int) -> int:
        """Frames produced with ``snip_edges`` (0 if the signal is shorter than one window)."""
        if num_samples < self.window_size:
            return 0
        return 1 + (num_samples - self.window_size) // self.window_shift


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi/HTK mel: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


@lru_cache(maxsize=8)
def _mel_banks_cpu(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(f"fbank: need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got low {low_freq}, high {high}")
    num_fft_bins = n_fft // 2
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)  # (M, 1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(torch.arange(num_fft_bins, dtype=torch.float64) * (sample_rate / n_fft)).unsqueeze(0)  # (1, K)
    up = (mel - left) / (center - left)  # (M, K)
    down = (right - mel) / (right - center)  # (M, K)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, K): zero outside (left, right)
    return F.pad(banks, (0, 1)).to(torch.float32)  # (M, K + 1): the Nyquist bin gets no weight


def mel_banks(cfg: FbankConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangular Kaldi mel filters, (num_mel_bins, n_fft // 2 + 1) float32."""
    banks = _mel_banks_cpu(cfg.num_mel_bins, cfg.n_fft, float(cfg.sample_rate), float(cfg.low_freq), float(cfg.high_freq))
    return banks.to(device)


def feature_window(cfg: FbankConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Kaldi window of ``window_size`` samples, float32 (symmetric: cosine argument 2 pi n / (N - 1))."""
    n = cfg.window_size
    hann = torch.hann_window(n, periodic=False, dtype=torch.float64)
    if cfg.window == "hanning":
        w = hann
    elif cfg.window == "povey":
        w = hann.pow(0.85)
    elif cfg.window == "hamming":
        w = torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    elif cfg.window == "rectangular":
        w = torch.ones(n, dtype=torch.float64)
    else:
        raise ValueError(f"fbank: window must be hanning|povey|hamming|rectangular, got {cfg.window!r}")
    return w.to(device=device, dtype=torch.float32)


def fbank(wave: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Log mel filterbank of a batch of waveforms: (B, N) -> (B, T, num_mel_bins) float32, on ``wave``'s device."""
    if wave.ndim != 2:
        raise ValueError(f"fbank: wave must be (B, N), got shape {tuple(wave.shape)}")
    if wave.shape[1] < cfg.window_size:
        raise ValueError(f"fbank: need at least {cfg.window_size} samples per waveform, got {wave.shape[1]}")
    x = wave.to(torch.float32)
    frames = x.unfold(1, cfg.window_size, cfg.window_shift)  # (B, T, 400), a view
    if cfg.remove_dc_offset:
        frames = frames - frames.mean(dim=2, keepdim=True)  # (B, T, 400)
    if cfg.preemphasis != 0.0:
        prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # x[i-1], x[0] for i = 0
        frames = frames - cfg.preemphasis * prev  # (B, T, 400)
    frames = frames * feature_window(cfg, x.device)  # (B, T, 400)
    frames = F.pad(frames, (0, cfg.n_fft - cfg.window_size))  # (B, T, 512)
    power = torch.fft.rfft(frames, dim=2).abs().pow(2)  # (B, T, 257)
    mel = power @ mel_banks(cfg, x.device).T  # (B, T, M)
    return torch.clamp(mel, min=FLOAT32_EPS).log()  # (B, T, M)
