"""PANNs Cnn14 (16 kHz variant) written for this project, with the released checkpoint's parameter names.

``Cnn14_16k_mAP=0.438.pth`` (``{"model": state_dict}``) loads key for key: the STFT-as-convolution weights
(``spectrogram_extractor.stft.conv_real/conv_imag.weight``), the mel matrix (``logmel_extractor.melW``), ``bn0``,
``conv_block1..6`` (conv1/bn1/conv2/bn2), ``fc1`` and ``fc_audioset``. The library ``panns-inference`` could not
be used: importing it downloads a label file (and it pulls librosa/matplotlib). Its ``Cnn14`` returns only the
sigmoid output; we return the ``fc_audioset`` logits too, which the KL and IS metrics need.

Front end at 16 kHz: hann window 512, hop 160, centred with reflect padding, power spectrum, 64 Slaney mel bands
50-8000 Hz, 10*log10(max(x, 1e-10)). Outputs: ``embedding`` (B, 2048) = relu(fc1(.)), ``logits`` (B, 527).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from frozen.audio import dft_kernels, hann, slaney_mel_matrix


@dataclass
class Cnn14Config:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # conv_block1..6
    embed_dim: int = 2048  # fc1: the embedding
    classes: int = 527  # fc_audioset: AudioSet logits

    @classmethod
    def tiny(cls) -> "Cnn14Config":
        return cls(channels=(4, 4, 8, 8, 8, 8), embed_dim=8, classes=6)


class _STFT(nn.Module):
    """DFT as two Conv1d (real, imaginary) with a periodic hann window folded into the weights."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        real, imag = dft_kernels(n_fft, hann(n_fft))  # (F, n_fft) each, periodic hann folded in
        self.conv_real = nn.Conv1d(1, real.shape[0], n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, imag.shape[0], n_fft, stride=hop, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real[:, None, :]).float())
            self.conv_imag.weight.copy_(torch.from_numpy(imag[:, None, :]).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # (B, 1, L + n_fft)
        real, imag = self.conv_real(x), self.conv_imag(x)  # (B, F, T)
        return (real ** 2 + imag ** 2).transpose(1, 2)[:, None]  # (B, 1, T, F) power


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = _STFT(n_fft, hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stft(x)


class _LogMel(nn.Module):
    def __init__(self, cfg: Cnn14Config):
        super().__init__()
        mel = slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.mel_bins, cfg.fmin, cfg.fmax)
        self.melW = nn.Parameter(torch.from_numpy(mel), requires_grad=False)  # (F, mel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(x, self.melW)  # (B, 1, T, mel)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    def __init__(self, cfg: Cnn14Config | None = None):
        super().__init__()
        self.cfg = cfg = cfg or Cnn14Config()
        self.spectrogram_extractor = _Spectrogram(cfg.n_fft, cfg.hop)
        self.logmel_extractor = _LogMel(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        c = (1,) + tuple(cfg.channels)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(c[i], c[i + 1]))
        self.fc1 = nn.Linear(c[-1], cfg.embed_dim)
        self.fc_audioset = nn.Linear(cfg.embed_dim, cfg.classes)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """wav (B, L) at 16 kHz -> {"embedding": (B, E), "logits": (B, classes)}."""
        if wav.ndim != 2:
            raise ValueError(f"Cnn14 expects a batch of waveforms (B, L), got shape {tuple(wav.shape)}")
        x = self.logmel_extractor(self.spectrogram_extractor(wav))  # (B, 1, T, mel)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, pool=(2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)  # (B, C, T')
        x = x.max(dim=2).values + x.mean(dim=2)  # (B, C)
        emb = F.relu(self.fc1(x))  # (B, E)
        return {"embedding": emb, "logits": self.fc_audioset(emb)}
