"""Pooled AudioMAE target (AudioLDM-2's "LOA"): 16 kHz audio -> (8, 768) per 10.24 s clip.

Facts (docs/models.md section 4, "Pooled AudioMAE target"; checked against AudioLDM2's ``audiomae`` code):

1. waveform: mean removed and peak scaled to 0.5 over the real samples, zero-padded to 163,840 samples (10.24 s);
2. Kaldi fbank (``frozen/audio.py``) after removing the padded waveform's mean: 1022 frames x 128 mel,
   zero-padded to 1024 frames, then (x + 4.2677393) / (4.5689974 * 2);
3. ViT-B/16 encoder of the AudioMAE masked autoencoder, no masking: 16x16 patches -> 64 (time) x 8 (freq) = 512
   tokens in time-major order (Conv2d output (B, C, 64, 8) flattened) + CLS; the feature is the mean of
   ``norm(x)`` over the outputs of blocks 9, 10, 11 (``contextual_depth = 8``: blocks n > 8);
4. pooling: drop CLS, (B, C, 64, 8) grid, (AvgPool2d(8) + MaxPool2d(8)) / 2 -> (B, 8, C), token i = 1.28 s.

Parameter names are timm's, so ``state_dict()`` matches the checkpoints key for key
(``tests/data/audiomae_keys.tsv``); the decoder of the autoencoder is not built and its keys are ignored.

    build(params, device) -> AudioMAEEncoder            # the FrozenEncoder used by the cache stage
    load_audiomae_state_dict(path, prefix) -> dict       # encoder keys of audioldm2-full.pth or pretrained.pth
    prepare_waveform / audio_to_fbank / is_silent        # the front end, usable alone
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from frozen import names
from frozen.base import EncoderInfo, build_options, empty_on_cpu, freeze
from frozen.blocks import Block
from frozen.weights import (existing_file, half_problem, init_tiny_, load_checked, meta_state, read_weights,
                            resolve_weights, shape_problems, shapes_of, unwrap)
from frozen.audio import FbankConfig, fbank

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CLIP_SAMPLES = names.AUDIOMAE_CLIP_SAMPLES  # 160,000: 10 s, docs/CONTRACTS.md
SEGMENT_SAMPLES = 163840  # 10.24 s = 1024 hops of 160 samples, AudioLDM-2's segment
TARGET_FRAMES = 1024  # fbank frames fed to the ViT (1022 computed + 2 zero rows)
FBANK_MEAN = -4.2677393  # AudioMAE's dataset statistics
FBANK_STD = 4.5689974
FBANK_CONFIG = FbankConfig(num_mel_bins=128, window="hanning")  # other fields: Kaldi defaults, see fbank.py
HUB_REPO = names.AUDIOMAE_HUB_REPO  # haoheliu/audioldm2-full
HUB_FILENAME = names.AUDIOMAE_HUB_FILENAME  # audioldm2-full.pth
FULL_PREFIX = names.AUDIOMAE_FULL_PREFIX  # cond_stage_models.0.cond_stage_models.2.audiomae.model.
DECODER_PREFIXES = ("decoder_", "mask_token")  # the MAE decoder: present in both released files, not needed


@dataclass
class AudioMAEConfig:
    """Sizes of the ViT encoder and of the token pooling."""

    width: int = 768  # ViT-B/16
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0  # MLP hidden = width * mlp_ratio
    patch: int = 16  # square patches, stride = patch
    input_frames: int = TARGET_FRAMES  # fbank frames (time rows)
    input_mels: int = 128  # mel bins (frequency columns)
    feature_layers: tuple[int, ...] = (9, 10, 11)  # 0-based blocks whose norm(x) are averaged
    pool: tuple[int, int] = (8, 8)  # (time, freq) pooling window on the 64 x 8 token grid
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        self.feature_layers = tuple(int(i) for i in self.feature_layers)
        self.pool = tuple(int(p) for p in self.pool)
        if not self.feature_layers or any(not 0 <= i < self.depth for i in self.feature_layers):
            raise ValueError(f"AudioMAEConfig: feature_layers {self.feature_layers} must name blocks in [0, {self.depth})")
        if self.width % self.num_heads:
            raise ValueError(f"AudioMAEConfig: width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.input_frames % self.patch or self.input_mels % self.patch:
            raise ValueError(f"AudioMAEConfig: input {self.input_frames}x{self.input_mels} is not a multiple of patch {self.patch}")
        gt, gf = self.grid
        if gt % self.pool[0] or gf % self.pool[1]:
            raise ValueError(f"AudioMAEConfig: pool {self.pool} does not tile the {gt}x{gf} token grid")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (time, freq): (64, 8)."""
        return self.input_frames // self.patch, self.input_mels // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]  # 512

    @property
    def num_tokens(self) -> int:
        """Pooled tokens per clip: (64 / 8) * (8 / 8) = 8."""
        return (self.grid[0] // self.pool[0]) * (self.grid[1] // self.pool[1])

    @classmethod
    def full(cls) -> "AudioMAEConfig":
        """AudioMAE ViT-B/16 as used by AudioLDM-2."""
        return cls()

    @classmethod
    def tiny(cls) -> "AudioMAEConfig":
        """Same classes and input, width 32, 4 blocks, features from blocks 1-3: for tests and CPU smoke runs."""
        return cls(width=32, depth=4, num_heads=4, feature_layers=(1, 2, 3))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: AudioMAEConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, C, 64, 8): time rows, frequency columns
        return x.flatten(2).transpose(1, 2)  # (B, 512, C), token index = t * 8 + f (time-major)


class AudioMAEViT(nn.Module):
    """Normalised fbank (B, 1, 1024, 128) -> pooled tokens (B, num_tokens, width)."""

    def __init__(self, cfg: AudioMAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))  # loaded, never regenerated
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.num_heads, int(cfg.width * cfg.mlp_ratio), eps=cfg.ln_eps)
                                    for _ in range(cfg.depth))  # timm's pre-LN block, qkv with bias
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1024, 128) -> mean over ``feature_layers`` of norm(block output): (B, 513, C), CLS first."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:]  # (B, 512, C)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1)  # (B, 513, C)
        picked = []
        for i, block in enumerate(self.blocks[: max(self.cfg.feature_layers) + 1]):
            x = block(x)
            if i in self.cfg.feature_layers:
                picked.append(self.norm(x))
        return torch.stack(picked).mean(dim=0)  # (B, 513, C)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 513, C) -> (avg + max) / 2 over pool windows of the token grid: (B, num_tokens, C)."""
        b, _, c = feats.shape
        grid = feats[:, 1:].transpose(1, 2).reshape(b, c, *self.cfg.grid)  # (B, C, 64, 8)
        k = self.cfg.pool
        pooled = (F.avg_pool2d(grid, k, k) + F.max_pool2d(grid, k, k)) / 2  # (B, C, 8, 1)
        return pooled.flatten(2).transpose(1, 2)  # (B, 8, C), in time order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))  # (B, 8, C)


# ----------------------------------------------------------------------------------------- front end


def prepare_waveform(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """AudioLDM-2's waveform normalisation of each clip's real samples, then zero padding.

    (B, N) float, lengths (B,) -> (B, 163840) float32: x[:L] -= mean; x[:L] /= max|x[:L]| + 1e-8; x *= 0.5;
    zeros after L (and after N).  A clip with L = 0 stays all zeros.
    """
    x = audio.to(torch.float32)
    n = x.shape[1]
    mask = torch.arange(n, device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)  # (B, N)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    mean = (x * mask).sum(dim=1, keepdim=True) / count  # (B, 1)
    x = (x - mean) * mask  # (B, N), zeros after L
    peak = x.abs().amax(dim=1, keepdim=True)  # (B, 1)
    x = x / (peak + 1e-8) * 0.5  # (B, N)
    if n >= SEGMENT_SAMPLES:
        return x[:, :SEGMENT_SAMPLES]
    return F.pad(x, (0, SEGMENT_SAMPLES - n))  # (B, 163840)


def audio_to_fbank(wave: torch.Tensor) -> torch.Tensor:
    """Prepared waveform (B, 163840) -> normalised fbank (B, 1024, 128), AudioMAE's input."""
    wave = wave - wave.mean(dim=1, keepdim=True)  # AudioLDM-2 removes the (padded) waveform's mean again
    fb = fbank(wave, FBANK_CONFIG)  # (B, 1022, 128)
    fb = fb[:, :TARGET_FRAMES]
    fb = F.pad(fb, (0, 0, 0, TARGET_FRAMES - fb.shape[1]))  # (B, 1024, 128), zero rows before normalising
    return (fb - FBANK_MEAN) / (FBANK_STD * 2)  # (B, 1024, 128)


def is_silent(audio: torch.Tensor, lengths: torch.Tensor, threshold_db: float = -60.0, *, measure: str = "peak") -> torch.Tensor:
    """(B,) bool: the real samples' peak (``measure="peak"``) or RMS (``"rms"``) is below ``threshold_db`` dBFS.

    A clip without samples is silent.  Such clips give no usable target (``audiomae/valid`` = False): the
    normalisation would blow up near-digital silence into noise.
    """
    if measure not in ("peak", "rms"):
        raise ValueError(f"is_silent: measure must be 'peak' or 'rms', got {measure!r}")
    x = audio.to(torch.float32)
    lengths = lengths.to(x.device)
    mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, N)
    if measure == "peak":
        level = (x.abs() * mask).amax(dim=1)  # (B,)
    else:
        level = ((x * x * mask).sum(dim=1) / lengths.clamp(min=1)).sqrt()  # (B,)
    threshold = 10.0 ** (threshold_db / 20.0)
    return (level < threshold) | (lengths <= 0)


# ----------------------------------------------------------------------------------------- weights


def _tiny_rule(name: str, module: nn.Module, t: torch.Tensor, draw) -> torch.Tensor:
    noise = draw("randn")
    if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
        return 1.0 + 0.1 * noise
    if name.endswith(".bias"):
        return 0.02 * noise
    if t.ndim >= 2 and name not in ("cls_token", "pos_embed"):
        return noise / t[0].numel() ** 0.5
    return 0.5 * noise  # cls_token, pos_embed


def init_tiny_weights_(model: AudioMAEViT, seed: int) -> AudioMAEViT:
    """Seeded random weights independent of the global RNG; LayerNorm affine and biases are randomised too,
    so that tests comparing against hand computations exercise every parameter."""
    return init_tiny_(model, seed, _tiny_rule)


def load_audiomae_state_dict(path: str | Path, prefix: str = FULL_PREFIX) -> dict[str, torch.Tensor]:
    """Encoder tensors of an AudioMAE checkpoint, with names relative to the ViT.

    Formats: AudioLDM-2's ``audioldm2-full.pth`` (``{"state_dict": ...}``, keys under ``prefix``, every other key
    belongs to other models and is ignored) or AudioMAE's ``pretrained.pth`` (``{"model": ...}``, no prefix).
    Decoder keys (``decoder_*``, ``mask_token``) are dropped in both; any other key under the prefix is kept, so
    that the checked load reports it as unexpected.
    """
    raw = read_weights(path, "AudioMAE")
    source = f"AudioMAE checkpoint {str(path)!r}"
    flat = unwrap(raw, source=source, strip=())
    full = (isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict)) or any(k.startswith(prefix) for k in flat)
    state = unwrap(flat, source=source, strip=(), under=prefix if full else "")
    decoder = [k for k in state if k.startswith(DECODER_PREFIXES)]
    log.info("AudioMAE: %d encoder tensors read from %s (%d decoder entries ignored)", len(state) - len(decoder),
             Path(path).name, len(decoder))
    if len(state) == len(decoder):
        raise RuntimeError(
            f"AudioMAE checkpoint {str(path)!r} has no AudioMAE weights"
            + (f" under the prefix {prefix!r}" if full else "") + "; is this audioldm2-full.pth or AudioMAE's pretrained.pth?"
        )
    return {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}


def resolve_checkpoint(params: dict) -> tuple[Path, dict]:
    """A local file, or a hub id resolved with ``hf_hub_download`` (only when it is not a local path).
    Returns the local path and the identity recorded in the cache."""
    return resolve_weights(str(params.get("checkpoint") or ""), what=f"audiomae params: checkpoint (e.g. {HUB_REPO})",
                           filename=params.get("filename", HUB_FILENAME), revision=params.get("revision"))


# ----------------------------------------------------------------------------------------- encoder


class AudioMAEEncoder:
    """FrozenEncoder for the cache stage: audio (B, 160000) float32 16 kHz -> (B, 8, D) float32 on CPU."""

    def __init__(self, model: AudioMAEViT, info: EncoderInfo, *, device: str, half: bool) -> None:
        self.model = model
        self.info = info
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32

    def check_inputs(self, batch: torch.Tensor, lengths: torch.Tensor) -> None:
        if not batch.is_floating_point() or batch.ndim != 2 or batch.shape[1] != CLIP_SAMPLES:
            raise ValueError(f"audiomae.encode: batch must be float (B, {CLIP_SAMPLES}) 16 kHz, got {batch.dtype} {tuple(batch.shape)}")
        if lengths.shape != (batch.shape[0],):
            raise ValueError(f"audiomae.encode: lengths must have shape ({batch.shape[0]},), got {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > CLIP_SAMPLES).any()):
            raise ValueError(f"audiomae.encode: lengths must lie in [0, {CLIP_SAMPLES}], got {lengths.tolist()}")

    def fbank(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 160000), (B,) -> normalised fbank (B, 1024, 128) float32 on the model's device."""
        wave = prepare_waveform(batch.to(self.device), lengths.to(self.device))  # (B, 163840)
        return audio_to_fbank(wave)  # (B, 1024, 128)

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.check_inputs(batch, lengths)
        with torch.inference_mode():
            x = self.fbank(batch, lengths).unsqueeze(1).to(self.dtype)  # (B, 1, 1024, 128), fbank in float32
            return self.model(x).float().cpu()  # (B, 8, D)


def build(params: dict, device: str = "cpu") -> AudioMAEEncoder:
    """params: ``model`` full|tiny (sizes); ``checkpoint`` (local file, or hub id + ``filename``/``revision``),
    required for full, optional for tiny (else seeded random weights from ``seed``); ``prefix`` (key prefix inside
    ``["state_dict"]``); ``feature_layers`` (override); ``half`` (CUDA only)."""
    kind, half = build_options("audiomae", params, device)
    cfg = AudioMAEConfig.tiny() if kind == "tiny" else AudioMAEConfig.full()
    if params.get("feature_layers") is not None:
        cfg = replace(cfg, feature_layers=tuple(params["feature_layers"]))
    if params.get("checkpoint"):
        path, identity = resolve_checkpoint(params)
        model = empty_on_cpu(lambda: AudioMAEViT(cfg))
        state = load_audiomae_state_dict(path, params.get("prefix", FULL_PREFIX))
        load_checked(model, state, source=f"AudioMAE checkpoint {str(path)!r}")
    elif kind in ("tiny", "random-full"):  # random-full: the released size, seeded random (smoke_full.py)
        seed = int(params.get("seed", 0))
        model = init_tiny_weights_(AudioMAEViT(cfg), seed)
        identity = {f"{kind.replace('-', '_')}_seed": seed}
    else:
        raise ValueError(f"audiomae params: model 'full' needs 'checkpoint' (a local file or the hub id {HUB_REPO})")
    model = freeze(model).to(device)
    if half:
        model = model.half()
    info = EncoderInfo(name="audiomae", input_kind="audio", output_shape=(cfg.num_tokens, cfg.width),
                       config=asdict(cfg), checkpoint=identity)
    log.info("audiomae: built %s model (D=%d, layers %s) on %s%s", kind, cfg.width, cfg.feature_layers, device,
             " fp16" if half else "")
    return AudioMAEEncoder(model, info, device=device, half=half)


def preflight(params: dict, device: str) -> list[str]:
    """What ``build(params, device)`` would trip over, found without loading weights (see frozen/cavp.py)."""
    out = half_problem("audiomae", params, device)
    path = existing_file(params.get("checkpoint"))
    if params.get("model", "full") == "full" and path is not None:
        own = meta_state(lambda: AudioMAEViT(AudioMAEConfig.full()))
        sd = load_audiomae_state_dict(path, params.get("prefix", FULL_PREFIX))
        out += shape_problems(f"audiomae checkpoint {path.name}", own, shapes_of(sd))
    return out
