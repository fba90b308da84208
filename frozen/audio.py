"""Every audio front end the frozen networks and the figures need, built from one set of shared pieces.

Shared pieces (written once, parametrised by what each reference does):

* mel scales: ``hz_to_mel`` / ``mel_to_hz`` with ``scale`` = ``"kaldi"`` (1127 ln(1 + f/700): Kaldi, TF VGGish),
  ``"htk"`` (2595 log10(1 + f/700): torchaudio/librosa htk) or ``"slaney"`` (librosa's default, PANNs);
* ``triangular``: triangular filters over points (FFT bin frequencies or their mels) between consecutive edges;
  ``mel_filters``: the librosa/torchaudio/TF family (FFT bins linspace(0, sr/2), edges linspace in mel);
  ``kaldi_mel_banks``: Kaldi's family (bins k * sr / n_fft below Nyquist, edges low + b * delta in mel);
* windows (``hann``, Kaldi's ``feature_window``), framing (``frame_signal``), power spectra (``stft_power``,
  ``dft_kernels`` for PANNs' STFT-as-convolution).

Variants (each matches its reference; the model modules keep a thin call):

=================  ==============================================================================================
``fbank``          Kaldi fbank (``torchaudio.compliance.kaldi.fbank``): AudioMAE (AudioLDM-2) and ImageBind
``passt_mel``      PaSST's ``AugmentMelSTFT`` in eval mode (frozen/passt.py)
``vggish_examples``  TF VGGish ``waveform_to_examples`` (frozen/vggish.py)
``slaney_mel_matrix``  PANNs' ``logmel_extractor.melW`` (librosa mel, Slaney norm; frozen/panns.py)
``ast_mel``        Synchformer's AST mel (torchaudio ``MelSpectrogram``, htk, no norm; scoring/desync.py)
``png_log_mel``    the log-mel of the spectrogram PNGs (pipeline/spectrogram.py)
``stft_db``        the dB STFT behind the gallery's spectrogram image (scoring/audio.py)
=================  ==============================================================================================

Kaldi fbank details: per frame of 25 ms every 10 ms (``snip_edges``) -> remove the frame's DC offset ->
pre-emphasis x[i] -= 0.97 x[i-1] (x[0] -= 0.97 x[0]) -> window (symmetric Hann "hanning"; "povey" = Hann ** 0.85)
-> zero-pad to the next power of two -> |rfft|^2 -> Kaldi mel filters (no area normalisation, Nyquist bin unused)
-> log(max(energy, float32 epsilon)). The waveform is taken as is (no int16 scaling); dither is not supported
(AudioLDM-2 and ImageBind use 0).

    fbank(wave (B, N) float32) -> (B, T, num_mel_bins), T = 1 + (N - 400) // 160 with the defaults
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920928955078125e-07, Kaldi's log floor

# ------------------------------------------------------------------------------------------- mel scales


def hz_to_mel(f, scale: str = "htk"):
    """Hz -> mel (numpy float64; a Python float gives a float)."""
    f = np.asarray(f, np.float64)
    if scale == "kaldi":
        return 1127.0 * np.log(1.0 + f / 700.0)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "slaney":  # linear below 1 kHz, logarithmic above (librosa htk=False)
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)
    raise ValueError(f"mel scale must be kaldi|htk|slaney, got {scale!r}")


def mel_to_hz(m, scale: str = "htk"):
    """mel -> Hz, the inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, np.float64)
    if scale == "kaldi":
        return 700.0 * (np.exp(m / 1127.0) - 1.0)
    if scale == "htk":
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    if scale == "slaney":
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)
    raise ValueError(f"mel scale must be kaldi|htk|slaney, got {scale!r}")


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi mel 1127 ln(1 + f / 700), computed as torchaudio's kaldi module does: ``(1 + f / 700).log()`` in the
    tensor's dtype, ``math.log`` for a Python float."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


# ------------------------------------------------------------------------------------------- filters


def triangular(points, edges):
    """Triangular filters (M, K): filter m rises from edges[m] to 1 at edges[m+1] and falls to 0 at edges[m+2],
    evaluated at ``points`` (K,), in whatever domain both are given (Hz or mel); numpy or torch."""
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1)
    up = (points[None, :] - lo) / (mid - lo)  # (M, K)
    down = (hi - points[None, :]) / (hi - mid)  # (M, K)
    if isinstance(up, torch.Tensor):
        return torch.clamp(torch.minimum(up, down), min=0.0)
    return np.maximum(0.0, np.minimum(up, down))


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, *,
                scale: str = "htk", domain: str = "hz", norm: str | None = None) -> np.ndarray:
    """librosa/torchaudio/TF-style mel filters, (n_mels, n_fft // 2 + 1) float64.

    FFT bins at linspace(0, sr/2); n_mels + 2 edges equally spaced in mel from fmin to fmax; triangles drawn in Hz
    (``domain="hz"``: librosa, torchaudio) or in mel (``domain="mel"``: TF VGGish); ``norm="slaney"`` scales each
    filter by 2 / (its width in Hz) (librosa's area normalisation).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (K,)
    edges_mel = np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2)  # (M + 2,)
    if domain == "mel":
        w = triangular(hz_to_mel(freqs, scale), edges_mel)
    elif domain == "hz":
        edges_hz = mel_to_hz(edges_mel, scale)
        w = triangular(freqs, edges_hz)
        if norm == "slaney":
            w *= (2.0 / (edges_hz[2:n_mels + 2] - edges_hz[:n_mels]))[:, None]
    else:
        raise ValueError(f"mel_filters: domain must be hz|mel, got {domain!r}")
    if norm not in (None, "slaney") or (norm and domain != "hz"):
        raise ValueError(f"mel_filters: norm must be None or 'slaney' (domain hz), got {norm!r}")
    return w


@lru_cache(maxsize=8)
def _kaldi_banks_cpu(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    # float32 throughout, in torchaudio's order of operations (``compliance.kaldi.get_mel_banks``): the filters
    # AudioLDM-2, ImageBind and PaSST were trained with. Built on the CPU even under a ``torch.device("meta")``
    # context (the cache must hold real values).
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(f"fbank: need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got low {low_freq}, high {high}")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high)  # Python floats (float64)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, device="cpu")[:, None]  # (M, 1) int64: the products below are float32
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    freqs = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32, device="cpu")  # (K,)
    mel = mel_scale(freqs)[None, :]  # (1, K)
    up = (mel - left) / (center - left)  # (M, K)
    down = (right - mel) / (right - center)  # (M, K)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))  # (M, K + 1): the Nyquist bin gets no weight


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Kaldi triangular mel filters (no VTLN warp), (num_bins, n_fft // 2 + 1) float32 as torchaudio builds them;
    ``high_freq`` <= 0 is an offset from Nyquist."""
    return _kaldi_banks_cpu(num_bins, n_fft, float(sample_rate), float(low_freq), float(high_freq)).to(device)


def slaney_mel_matrix(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """PANNs' ``melW`` (librosa.filters.mel, Slaney scale and norm), (n_fft // 2 + 1, n_mels) float32."""
    return mel_filters(sr, n_fft, n_mels, fmin, fmax, scale="slaney", norm="slaney").T.astype(np.float32)


# ------------------------------------------------------------------------------------------- windows, frames, STFT


def hann(n: int, periodic: bool = True, numpy_hanning: bool = False) -> np.ndarray:
    """Hann window (float64): 0.5 - 0.5 cos(2 pi k / n) (periodic) or / (n - 1) (symmetric);
    ``numpy_hanning`` builds it as ``np.hanning`` does (same values to 1 ulp)."""
    if numpy_hanning:
        return np.hanning(n + 1)[:-1] if periodic else np.hanning(n)
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n if periodic else n - 1))


def frame_signal(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """(L,) -> (1 + (L - win) // hop, win) frames that fit completely (none when L < win)."""
    n = 1 + (len(x) - win) // hop if len(x) >= win else 0
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]  # (frames, win)
    return x[idx]


def stft_power(x: torch.Tensor, n_fft: int, hop: int, win_length: int, window: torch.Tensor, *,
               via_abs: bool = False) -> torch.Tensor:
    """Centred (reflect) STFT power, (B, L) -> (B, n_fft // 2 + 1, frames); ``via_abs``: |X| ** 2 as torchaudio's
    ``Spectrogram(power=2)``, else re^2 + im^2 as PaSST."""
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win_length, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return spec.abs().pow(2.0) if via_abs else spec.real ** 2 + spec.imag ** 2


def dft_kernels(n_fft: int, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windowed DFT rows for an STFT by convolution: (real, imag), each (n_fft // 2 + 1, n_fft) float64."""
    ang = 2 * np.pi * np.outer(np.arange(n_fft // 2 + 1), np.arange(n_fft)) / n_fft  # (F, n_fft)
    return np.cos(ang) * window, -np.sin(ang) * window


# ------------------------------------------------------------------------------------------- Kaldi fbank


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


def mel_banks(cfg: FbankConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangular Kaldi mel filters of ``cfg``, (num_mel_bins, n_fft // 2 + 1) float32."""
    return kaldi_mel_banks(cfg.num_mel_bins, cfg.n_fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq, device)


def feature_window(cfg: FbankConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Kaldi window of ``window_size`` samples, built in float32 as torchaudio does (symmetric: cosine argument
    2 pi n / (N - 1))."""
    n, kw = cfg.window_size, {"dtype": torch.float32, "device": device}
    if cfg.window == "hanning":
        return torch.hann_window(n, periodic=False, **kw)
    if cfg.window == "povey":
        return torch.hann_window(n, periodic=False, **kw).pow(0.85)
    if cfg.window == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, **kw)
    if cfg.window == "rectangular":
        return torch.ones(n, **kw)
    raise ValueError(f"fbank: window must be hanning|povey|hamming|rectangular, got {cfg.window!r}")


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


# ------------------------------------------------------------------------------------------- model variants


def passt_mel(wav: torch.Tensor, mel_basis: torch.Tensor, window: torch.Tensor, n_fft: int, hop: int,
              win_length: int) -> torch.Tensor:
    """PaSST (eval): pre-emphasis y[n] = x[n+1] - 0.97 x[n], STFT power, Kaldi mels, log(x + 1e-5), (x + 4.5) / 5:
    (B, L) at 32 kHz -> (B, 1, n_mels, frames)."""
    x = wav[:, 1:] - 0.97 * wav[:, :-1]  # pre-emphasis, (B, L-1)
    power = stft_power(x, n_fft, hop, win_length, window)  # (B, F, T)
    mel = torch.log(torch.matmul(mel_basis, power) + 1e-5)  # (B, n_mels, T)
    return ((mel + 4.5) / 5.0)[:, None]


VGGISH_SR, VGGISH_WIN, VGGISH_HOP, VGGISH_NFFT = 16000, 400, 160, 512
VGGISH_MELS, VGGISH_FMIN, VGGISH_FMAX, VGGISH_LOG_OFFSET, VGGISH_EXAMPLE_FRAMES = 64, 125.0, 7500.0, 0.01, 96


def vggish_mel_matrix(n_freq: int = VGGISH_NFFT // 2 + 1) -> np.ndarray:
    """TF VGGish ``spectrogram_to_mel_matrix``: (n_freq, 64) HTK-mel (1127 ln) triangles drawn in mel, 125-7500 Hz;
    the DC bin gets no weight."""
    w = mel_filters(VGGISH_SR, 2 * (n_freq - 1), VGGISH_MELS, VGGISH_FMIN, VGGISH_FMAX, scale="kaldi", domain="mel")
    w = np.ascontiguousarray(w.T)  # (n_freq, 64)
    w[0, :] = 0.0
    return w


def vggish_examples(x: np.ndarray) -> np.ndarray:
    """16 kHz mono (L,) -> log-mel examples (N, 96, 64) float32: 25 ms periodic-hann frames every 10 ms, |rfft 512|,
    log(mel + 0.01), non-overlapping 96-frame examples; N = 0 when shorter than 0.96 s."""
    frames = frame_signal(np.asarray(x, np.float64), VGGISH_WIN, VGGISH_HOP)  # (frames, 400)
    if len(frames) == 0:
        return np.zeros((0, VGGISH_EXAMPLE_FRAMES, VGGISH_MELS), np.float32)
    mag = np.abs(np.fft.rfft(frames * hann(VGGISH_WIN), VGGISH_NFFT))  # (frames, 257)
    log_mel = np.log(mag @ vggish_mel_matrix(mag.shape[1]) + VGGISH_LOG_OFFSET)  # (frames, 64)
    n_ex = len(frames) // VGGISH_EXAMPLE_FRAMES
    return log_mel[: n_ex * VGGISH_EXAMPLE_FRAMES].reshape(n_ex, VGGISH_EXAMPLE_FRAMES, VGGISH_MELS).astype(np.float32)


def htk_mel_filters(sr: int = 16000, n_fft: int = 1024, n_mels: int = 128, fmin: float = 0.0,
                    fmax: float | None = None) -> torch.Tensor:
    """torchaudio ``melscale_fbanks`` (htk, no norm) as Synchformer's AST front end uses them, (F, n_mels) float32."""
    return torch.from_numpy(np.ascontiguousarray(mel_filters(sr, n_fft, n_mels, fmin, fmax, scale="htk").T)).float()


def ast_mel(segs: torch.Tensor, fb: torch.Tensor, n_fft: int = 1024, win: int = 400, hop: int = 160) -> torch.Tensor:
    """Synchformer's AST front end: (S, L) -> log(power mel + 1e-6) (S, n_mels, frames); hann ``win`` centred in
    the ``n_fft`` frame, centred reflect padding."""
    power = stft_power(segs, n_fft, hop, win, torch.hann_window(win), via_abs=True)  # (S, F, T)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (S, n_mels, T)
    return torch.log(mel + 1e-6)


def png_log_mel(audio: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Power log-mel in dB for the figures, (n_mels, frames): centred frames (reflect padding), periodic Hann, HTK
    mel 0 .. sr/2 without normalisation, 10 log10(max(x, 1e-10))."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects mono audio (samples,), got {x.shape}")
    x = np.pad(x, n_fft // 2, mode="reflect" if len(x) > n_fft // 2 else "constant")
    frames = frame_signal(x, n_fft, hop)  # (frames, n_fft)
    spec = np.abs(np.fft.rfft(frames * hann(n_fft, numpy_hanning=True), axis=1)) ** 2  # (frames, n_fft/2+1)
    fb = mel_filters(sample_rate, n_fft, n_mels, scale="htk")  # (n_mels, n_fft/2+1)
    return 10.0 * np.log10(np.maximum(fb @ spec.T, 1e-10))  # (n_mels, frames)


def stft_db(x: np.ndarray, sr: int, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """dB magnitude of scipy's STFT (periodic Hann, zero-padded ends), (n_fft // 2 + 1, frames) float64."""
    from scipy import signal

    x = np.asarray(x, np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    _, _, z = signal.stft(x, fs=sr, nperseg=n_fft, noverlap=n_fft - hop)
    return 20 * np.log10(np.abs(z) + 1e-10)  # (F, T)
