"""ImageBind-huge vision and audio towers written for this project, and the IB-score scorer (av-benchmark protocol).

Why a port: the ``imagebind`` package needs torchvision, torchaudio and pytorchvideo, which this project does not
install. Module and parameter names follow the released ``imagebind_huge.pth`` so its vision and audio entries load
key for key (the text, depth, thermal and IMU entries are reported and dropped):

    modality_preprocessors.vision  rgbt_stem.proj.1.weight (Conv3d 3->1280, kernel = stride = (2, 14, 14), no bias;
                                   proj.0 is the parameter-free "repeat a still image to 2 frames"),
                                   pos_embedding_helper.pos_embed (1, 1 + 256, 1280), cls_token (1, 1, 1280)
    modality_preprocessors.audio   rgbt_stem.proj.weight (Conv2d 1->768, kernel 16, stride 10, no bias),
                                   rgbt_stem.norm_layer (LayerNorm eps 1e-5), pos_embed (1, 1 + 12*19, 768), cls_token
    modality_trunks.<m>            pre_transformer_layer.0 (LayerNorm eps 1e-6, vision only),
                                   blocks.<i>: pre-LN block (norm_1, attn = nn.MultiheadAttention with bias, audio
                                   also bias_k/bias_v, norm_2, mlp.fc1/fc2 with GELU, ratio 4), LayerNorm eps 1e-6
    modality_heads.<m>             0: LayerNorm eps 1e-6, 1: take the CLS token, 2: Linear(dim, 1024, no bias)
    modality_postprocessors        vision: L2 normalise; audio: L2 normalise then x exp(log_logit_scale) (= 20, a
                                   buffer: ``modality_postprocessors.audio.1.log_logit_scale``)

ViT-H/14 vision: 32 blocks, width 1280, 16 heads. Audio: 12 blocks, width 768, 12 heads. Inputs of several clips are
embedded clip by clip and the clip embeddings (after the postprocessor) are averaged, as ImageBind's forward does.

IB-score as av-benchmark computes it (``extract_video.py``, ``av_bench/data/video_dataset.py``,
``av_bench/data/audio_dataset.py``, ``av_bench/evaluate.py``):

* video: frames decoded through ffmpeg's ``fps=0.5`` filter in rgb24, the first ``int(0.5 * 8)`` = 4 kept (a video
  with fewer is rejected); shorter side resized to 224 (bicubic, antialiased, back to uint8 range), /255,
  normalised with the CLIP mean/std; three 224 x 224 crops (left/centre/right, or top/centre/bottom); every pair of
  consecutive frames is one 2-frame clip: 3 crops x 3 clips = 9 clips -> mean of their normalised embeddings.
* audio: the 16 kHz waveform, 3 clips of 2 s with starts evenly spaced over ``[0, duration - 2]`` (pytorchvideo's
  ``ConstantClipsPerVideoSampler``: 0, 3, 6 s for 8 s); each clip has its mean removed (in place, as the reference
  does), Kaldi fbank (128 mel, 25 ms / 10 ms, hanning, no dither) -> (128, 198) zero-padded to 204 frames,
  normalised (x + 4.268) / 9.138 -> mean of the three scaled, normalised embeddings.
* score: cosine(video embedding, audio embedding); :func:`scoring.metrics.cosine_score` gives it x 100 (preprocessing and the scorer: scoring/ib_score.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frozen.audio import FbankConfig
from frozen.blocks import Mlp, SelfAttention, pre_norm_residual
from frozen.weights import load_checked, read_weights, seeded, unwrap

log = logging.getLogger(__name__)

MODALITIES = ("vision", "audio")

# av-benchmark / ImageBind preprocessing constants
VIDEO_FPS = 0.5
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NUM_CROPS = 3
AUDIO_SR = 16000
AUDIO_CLIP_SECONDS = 2
AUDIO_CLIPS = 3
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
AUDIO_FBANK = FbankConfig(sample_rate=AUDIO_SR, num_mel_bins=128, window="hanning")


@dataclass
class ImageBindConfig:
    out_dim: int = 1024
    # vision (ViT-H/14 over 2-frame clips)
    image_size: int = 224
    video_frames: int = 2
    patch: tuple[int, int, int] = (2, 14, 14)
    vision_dim: int = 1280
    vision_blocks: int = 32
    vision_heads: int = 16
    # audio (ViT-B over the 128 x 204 fbank, overlapping 16 x 16 patches, stride 10)
    mel_bins: int = 128
    target_length: int = 204
    audio_kernel: int = 16
    audio_stride: int = 10
    audio_dim: int = 768
    audio_blocks: int = 12
    audio_heads: int = 12
    audio_logit_scale: float = 20.0

    @classmethod
    def tiny(cls) -> "ImageBindConfig":
        """Same classes and preprocessing (224 crops, 128 x 204 fbank), small widths and depths."""
        return cls(out_dim=16, vision_dim=16, vision_blocks=2, vision_heads=2, audio_dim=16, audio_blocks=2,
                   audio_heads=2)

    def grid(self, size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> int:
        return int(np.prod([(s - k) // st + 1 for s, k, st in zip(size, kernel, stride)]))

    @property
    def vision_patches(self) -> int:  # 1 x 16 x 16 = 256
        return self.grid((self.video_frames, self.image_size, self.image_size), self.patch, self.patch)

    @property
    def audio_patches(self) -> int:  # 12 x 19 = 228
        k, s = self.audio_kernel, self.audio_stride
        return self.grid((self.mel_bins, self.target_length), (k, k), (s, s))


# ----------------------------------------------------------------------------------------- network


class _PadIm2Video(nn.Module):
    """(B, C, H, W) or (B, C, 1, H, W) -> (B, C, ntimes, H, W) by repetition; longer clips pass unchanged."""

    def __init__(self, ntimes: int):
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"vision input must be (B, C, H, W) or (B, C, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class _PatchEmbed(nn.Module):
    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, D, (T) H W) -> (B, L, D)
        return self.norm_layer(x) if self.norm_layer is not None else x


class _PosEmbed(nn.Module):
    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))


class _Preprocessor(nn.Module):
    """Patch tokens, a CLS token in front, learnt position embeddings (no interpolation: fixed input size)."""

    def __init__(self, stem: _PatchEmbed, num_patches: int, dim: int):
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = _PosEmbed(1 + num_patches, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if not self.cls_token.is_meta:
            with torch.no_grad():
                nn.init.normal_(self.cls_token, std=dim ** -0.5)
                nn.init.normal_(self.pos_embedding_helper.pos_embed, std=dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)  # (B, L, D)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] != pos.shape[1]:
            raise ValueError(f"input gives {tokens.shape[1]} tokens, the position embedding has {pos.shape[1]}")
        return tokens + pos


class _Block(nn.Module):
    """The shared pre-LN block (:func:`frozen.blocks.pre_norm_residual`) under ImageBind's released names and order:
    ``attn`` (torch MultiheadAttention), ``norm_1``, ``mlp``, ``norm_2``."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool):
        super().__init__()
        self.attn = SelfAttention(dim, heads, add_bias_kv=add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        return pre_norm_residual(x, self.norm_1, self.attn, self.norm_2, self.mlp)


class _Trunk(nn.Module):
    def __init__(self, dim: int, blocks: int, heads: int, pre_ln: bool, add_bias_kv: bool):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_ln else nn.Identity())
        self.blocks = nn.Sequential(*[_Block(dim, heads, add_bias_kv) for _ in range(blocks)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pre_transformer_layer(tokens))


class _SelectElement(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class _LogitScaling(nn.Module):
    """Fixed scale exp(log_logit_scale), capped at 100, kept as a (checkpointed) buffer."""

    def __init__(self, init: float):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.ones([]) * math.log(init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=100.0) * x


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-6), _SelectElement(0), nn.Linear(dim, out_dim, bias=False))


class ImageBind(nn.Module):
    """The vision and audio towers of ImageBind (huge by default)."""

    def __init__(self, cfg: ImageBindConfig | None = None):
        super().__init__()
        cfg = cfg or ImageBindConfig()
        self.cfg = cfg
        vision_stem = _PatchEmbed(nn.Sequential(
            _PadIm2Video(cfg.video_frames),
            nn.Conv3d(3, cfg.vision_dim, kernel_size=cfg.patch, stride=cfg.patch, bias=False)))
        audio_stem = _PatchEmbed(
            nn.Conv2d(1, cfg.audio_dim, kernel_size=cfg.audio_kernel, stride=cfg.audio_stride, bias=False),
            norm_layer=nn.LayerNorm(cfg.audio_dim))
        self.modality_preprocessors = nn.ModuleDict({
            "vision": _Preprocessor(vision_stem, cfg.vision_patches, cfg.vision_dim),
            "audio": _Preprocessor(audio_stem, cfg.audio_patches, cfg.audio_dim),
        })
        self.modality_trunks = nn.ModuleDict({
            "vision": _Trunk(cfg.vision_dim, cfg.vision_blocks, cfg.vision_heads, pre_ln=True, add_bias_kv=False),
            "audio": _Trunk(cfg.audio_dim, cfg.audio_blocks, cfg.audio_heads, pre_ln=False, add_bias_kv=True),
        })
        self.modality_heads = nn.ModuleDict({
            "vision": _head(cfg.vision_dim, cfg.out_dim),
            "audio": _head(cfg.audio_dim, cfg.out_dim),
        })
        self.modality_postprocessors = nn.ModuleDict({
            "vision": _Normalize(),
            "audio": nn.Sequential(_Normalize(), _LogitScaling(cfg.audio_logit_scale)),
        })

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """One embedding per clip: vision (N, 3, 2, 224, 224), audio (N, 1, 128, 204) -> (N, out_dim)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        tokens = self.modality_preprocessors[modality](x)
        tokens = self.modality_trunks[modality](tokens)
        return self.modality_postprocessors[modality](self.modality_heads[modality](tokens))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Like ImageBind's forward: inputs of 5+ dims are (B, S, ...) clips; their S embeddings are averaged."""
        out = {}
        for modality, x in inputs.items():
            reduce = x.ndim >= 5
            if reduce:
                b, s = x.shape[:2]
                x = x.reshape(b * s, *x.shape[2:])
            e = self.embed(modality, x)
            out[modality] = e.reshape(b, s, -1).mean(dim=1) if reduce else e
        return out


def build_tiny(seed: int = 0) -> ImageBind:
    """The tiny config with weights drawn from ``seed`` (the global RNG state is left as it was); norms and biases
    are perturbed, so a wrong parameter mapping shows in the outputs."""
    return seeded(lambda: ImageBind(ImageBindConfig.tiny()), seed, perturb=0.1)


# the released file also holds the text, depth, thermal and IMU towers: dropped (logged), not an error
OTHER_TOWERS = tuple(f"modality_{part}.{m}." for part in ("preprocessors", "trunks", "heads", "postprocessors")
                     for m in ("text", "depth", "thermal", "imu"))


def load_imagebind(model: ImageBind, path: str | Path) -> dict[str, list[str]]:
    """Load ``imagebind_huge.pth`` (or a file with the same nesting) into ``model``.

    Every key of ``model`` must be present with its shape (else RuntimeError); checkpoint keys ``model`` does not
    have (the text/depth/thermal/IMU towers, or anything else) are logged and returned as ``unexpected``.
    """
    what = "ImageBind (evaluate.params.imagebind_ckpt: imagebind_huge.pth, or 'tiny')"
    source = f"ImageBind checkpoint {str(path)!r}"
    state = unwrap(read_weights(path, what), source=source)
    report = load_checked(model, state, source=source, ignore=OTHER_TOWERS, ignore_why="other ImageBind modalities")
    return {"missing": report.missing, "unexpected": sorted(report.ignored + report.unexpected)}


def build_imagebind(ckpt: str | Path, *, seed: int = 0) -> ImageBind:
    """``ckpt`` = "tiny" (seeded random tiny model) or the path of ``imagebind_huge.pth`` (built on meta, then loaded)."""
    if str(ckpt) == "tiny":
        return build_tiny(seed)
    if str(ckpt) == "random-full":  # imagebind_huge's size, seeded random weights (benchmarks/smoke_full.py)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return ImageBind(ImageBindConfig())
        finally:
            torch.random.set_rng_state(state)
    with torch.device("meta"):
        model = ImageBind(ImageBindConfig())
    load_imagebind(model, ckpt)
    return model
