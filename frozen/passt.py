"""PaSST-S (``passt_s_swa_p16_128_ap476``) written for this project, with the released checkpoint's names.

The library ``hear21passt`` imports torchaudio at module level (and its wheel requires it), which this project
must not install, so the network is re-implemented: a DeiT-style distilled ViT over a (1, 128, T) log-mel with
16x16 patches at stride 10, separate frequency/time positional embeddings (``freq_new_pos_embed``
(1, D, 12, 1), ``time_new_pos_embed`` (1, D, 1, 99)), ``new_pos_embed`` for the cls/dist tokens, 12 blocks
(LayerNorm eps 1e-6, qkv with bias, exact GELU), final ``norm``; ``head`` = LayerNorm + Linear(527), ``head_dist``.
Outputs (eval): ``embedding`` = (cls + dist) / 2 (768-d), ``logits`` = head(embedding).

Front end at 32 kHz (eval mode, no augmentation): pre-emphasis y[n] = x[n+1] - 0.97 x[n], STFT n_fft 1024,
hop 320, symmetric hann 800 (centred in the 1024 frame), reflect-centred, power, 128 Kaldi mel bands 0-15000 Hz
(+ a zero Nyquist column), log(x + 1e-5), (x + 4.5) / 5. Input: 8 s zero-padded to 10 s = 320,000 samples
-> 1000 frames -> 12 x 99 patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from frozen.blocks import Block

from frozen.audio import kaldi_mel_banks, passt_mel

SR = 32000
CLIP_SAMPLES = 320000  # 10 s at 32 kHz


@dataclass
class PaSSTConfig:
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 800
    hop: int = 320
    fmin: float = 0.0
    fmax: float = 15000.0
    input_tdim: int = 998
    patch: int = 16
    stride: int = 10
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    classes: int = 527
    clip_seconds: float = 10.0  # inputs are zero-padded/cut to this length (the model's positional range)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * SR))

    @property
    def grid(self) -> tuple[int, int]:  # (freq, time) sizes of the positional embeddings, as the reference
        return self.n_mels // self.stride, self.input_tdim // self.stride

    @classmethod
    def tiny(cls) -> "PaSSTConfig":
        return cls(embed_dim=8, depth=1, heads=2, classes=6, clip_seconds=2.0, input_tdim=198)


class MelFrontEnd(nn.Module):
    def __init__(self, cfg: PaSSTConfig):
        super().__init__()
        self.cfg = cfg
        banks = kaldi_mel_banks(cfg.n_mels, cfg.n_fft, SR, cfg.fmin, cfg.fmax).clone()  # (n_mels, n_fft/2 + 1)
        self.register_buffer("mel_basis", banks, persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, L) at 32 kHz -> (B, 1, n_mels, frames)."""
        return passt_mel(wav, self.mel_basis, self.window, self.cfg.n_fft, self.cfg.hop, self.cfg.win_length)


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: PaSSTConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=cfg.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, F', T')


class PaSSTNet(nn.Module):
    def __init__(self, cfg: PaSSTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PaSSTConfig()
        d = cfg.embed_dim
        f, t = cfg.grid
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, t))
        self.blocks = nn.Sequential(*[Block(d, cfg.heads, int(d * cfg.mlp_ratio), eps=1e-6) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.classes))
        self.head_dist = nn.Linear(d, cfg.classes)
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                  self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """mel (B, 1, n_mels, T) -> {"embedding": (B, D), "logits": (B, classes)}."""
        x = self.patch_embed(mel)  # (B, D, F', T')
        if x.shape[-1] > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"PaSST: {x.shape[-1]} time patches exceed the model's "
                             f"{self.time_new_pos_embed.shape[-1]}; feed at most 10 s")
        x = x + self.time_new_pos_embed[..., : x.shape[-1]] + self.freq_new_pos_embed
        b = x.shape[0]
        x = x.flatten(2).transpose(1, 2)  # (B, F'*T', D)
        cls = self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))  # (B, 2 + N, D)
        emb = (x[:, 0] + x[:, 1]) / 2
        return {"embedding": emb, "logits": self.head(emb)}


class PaSST(nn.Module):
    """Front end + network; ``net`` holds every checkpoint parameter."""

    def __init__(self, cfg: PaSSTConfig | None = None):
        super().__init__()
        self.cfg = cfg or PaSSTConfig()
        self.mel = MelFrontEnd(self.cfg)
        self.net = PaSSTNet(self.cfg)

    def forward(self, wav32k: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(self.mel(wav32k))
