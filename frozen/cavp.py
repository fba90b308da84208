"""CAVP video encoder (Diff-Foley): a SlowOnly ResNet3D-50 backbone plus a linear projection head.

Facts (docs/models.md section 2, "CAVP"): frames in [0, 1] without mean/std, no temporal stride
anywhere (one output per input frame), spatial mean pooling, Linear(2048, 512), L2-normalised per frame.
Submodule names reproduce the released checkpoint keys (``video_encoder.*``, ``video_project_head.*``).

    build(params, device) -> CAVPEncoder      # the FrozenEncoder used by the cache stage
    load_cavp_state_dict(path) -> dict         # the video keys of a cavp_epoch66.ckpt-style file
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from frozen import names
from frozen.base import EncoderInfo, build_options, empty_on_cpu, freeze, positive_int
from frozen.grid import ClipGrid
from frozen.weights import (existing_file, half_problem, init_tiny_, load_checked, meta_state, read_weights,
                            resolve_weights, shape_problems, shapes_of, unwrap)

log = logging.getLogger(__name__)

KEEP_PREFIXES = ("video_encoder.", "video_project_head.")
HUB_FILENAME = names.CAVP_HUB_FILENAME  # diff_foley_ckpt/cavp_epoch66.ckpt
IMAGE_SIZE = names.CAVP_IMAGE_SIZE  # 224; the frame count is the clip grid's (frozen/grid.py): no temporal stride
CHUNK_FRAMES = names.CAVP_CHUNK_FRAMES  # 40: the reference encodes 40-frame chunks independently


@dataclass
class CAVPConfig:
    """Sizes of the SlowOnly ResNet3D backbone and its projection head."""

    depths: tuple[int, ...] = (3, 4, 6, 3)  # bottleneck blocks per stage
    base_width: int = 64  # stem channels = planes of stage 1; stage i has base_width * 2**i planes
    expansion: int = 4  # bottleneck output channels = planes * expansion
    proj_dim: int = 512  # output feature size D
    temporal_conv1: tuple[bool, ...] = (False, False, True, True)  # conv1 kernel (3,1,1) in that stage
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)  # in conv2 of each stage's first block
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.depths = tuple(self.depths)
        self.temporal_conv1 = tuple(bool(t) for t in self.temporal_conv1)
        self.spatial_strides = tuple(self.spatial_strides)
        n = len(self.depths)
        if len(self.temporal_conv1) != n or len(self.spatial_strides) != n:
            raise ValueError(
                f"CAVPConfig: depths {self.depths}, temporal_conv1 {self.temporal_conv1} and spatial_strides "
                f"{self.spatial_strides} must have one entry per stage"
            )

    @property
    def feat_dim(self) -> int:
        """Channels out of the last stage (2048 for the full model)."""
        return self.base_width * 2 ** (len(self.depths) - 1) * self.expansion

    @classmethod
    def full(cls) -> "CAVPConfig":
        """The released model: ResNet3D-50 SlowOnly, 2048 -> 512."""
        return cls()

    @classmethod
    def tiny(cls) -> "CAVPConfig":
        """Same classes, one block per stage, width 8 (feat 256), proj 32: for tests and CPU smoke runs."""
        return cls(depths=(1, 1, 1, 1), base_width=8, proj_dim=32)


class ConvBN(nn.Module):
    """Conv3d (no bias) + BatchNorm3d, optionally ReLU; keys ``conv.weight``, ``bn.*`` (mmaction ConvModule)."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0, *, relu: bool, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(c_out, eps=eps)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Bottleneck3d(nn.Module):
    """1x1 (or 3x1x1 temporal) -> 1x3x3 (spatial stride) -> 1x1 expand; identity or downsample shortcut."""

    def __init__(self, c_in: int, planes: int, *, stride: int, temporal: bool, cfg: CAVPConfig) -> None:
        super().__init__()
        c_out = planes * cfg.expansion
        k1, p1 = ((3, 1, 1), (1, 0, 0)) if temporal else ((1, 1, 1), 0)
        self.conv1 = ConvBN(c_in, planes, k1, padding=p1, relu=True, eps=cfg.bn_eps)
        self.conv2 = ConvBN(planes, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1), relu=True, eps=cfg.bn_eps)
        self.conv3 = ConvBN(planes, c_out, 1, relu=False, eps=cfg.bn_eps)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = ConvBN(c_in, c_out, 1, (1, stride, stride), relu=False, eps=cfg.bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return F.relu(out + identity)


class SlowOnlyResNet3d(nn.Module):
    """Stem (1,7,7)/(1,2,2) + maxpool (1,3,3)/(1,2,2) + bottleneck stages; time is never strided."""

    def __init__(self, cfg: CAVPConfig) -> None:
        super().__init__()
        w = cfg.base_width
        self.conv1 = ConvBN(3, w, (1, 7, 7), (1, 2, 2), (0, 3, 3), relu=True, eps=cfg.bn_eps)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        c_in = w
        self.layer_names = []
        for i, depth in enumerate(cfg.depths):
            planes = w * 2**i
            blocks = []
            for j in range(depth):
                stride = cfg.spatial_strides[i] if j == 0 else 1
                blocks.append(Bottleneck3d(c_in, planes, stride=stride, temporal=cfg.temporal_conv1[i], cfg=cfg))
                c_in = planes * cfg.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.layer_names.append(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))  # (B, w, T, H/4, W/4)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x  # (B, feat_dim, T, H/32, W/32)


class CAVPVideoEncoder(nn.Module):
    """frames (B, T, 3, H, W) in [0, 1] -> per-frame unit vectors (B, T, proj_dim)."""

    def __init__(self, cfg: CAVPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.video_encoder = SlowOnlyResNet3d(cfg)
        self.video_project_head = nn.Linear(cfg.feat_dim, cfg.proj_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        x = self.video_encoder(x)  # (B, C, T, h, w), C = feat_dim, T unchanged
        x = x.mean(dim=(3, 4))  # (B, C, T)
        x = x.transpose(1, 2)  # (B, T, C)
        x = self.video_project_head(x)  # (B, T, D)
        return F.normalize(x.float(), dim=-1)  # (B, T, D), unit L2 norm per frame, float32


def _tiny_rule(name: str, module: nn.Module, t: torch.Tensor, draw) -> torch.Tensor:
    """He-normal convs, random BatchNorm affine and statistics, 1/sqrt(fan_in) linears, small linear biases."""
    if isinstance(module, nn.Conv3d):
        return draw("randn") * (2.0 / t[0].numel()) ** 0.5
    if isinstance(module, nn.BatchNorm3d):  # drawn in the order weight, bias, running_mean, running_var
        return 0.5 + draw("rand") if name.endswith(("weight", "running_var")) else 0.1 * draw("randn")
    if name.endswith("weight"):  # the projection head
        return draw("randn") / module.in_features**0.5
    return 0.01 * draw("randn")


def init_tiny_weights_(model: CAVPVideoEncoder, seed: int) -> CAVPVideoEncoder:
    """Seeded random weights that do not depend on the global RNG; BN statistics are randomised too,
    so that a test comparing against a hand computation exercises every parameter and buffer."""
    return init_tiny_(model, seed, _tiny_rule)


def load_cavp_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a Diff-Foley CAVP checkpoint (``.ckpt``/``.pt`` via ``torch.load(weights_only=True)``, or
    ``.safetensors``); accept ``{"state_dict": {...}}`` or flat, with or without DDP ``module.`` prefixes.
    Returns only the ``video_encoder.*`` / ``video_project_head.*`` tensors, prefixes stripped."""
    state = unwrap(read_weights(path, "CAVP"), source=f"CAVP checkpoint {str(path)!r}")
    dropped = [k for k in state if not k.startswith(KEEP_PREFIXES)]
    if dropped:
        log.info("CAVP: %d non-video checkpoint entries ignored (e.g. %s)", len(dropped), dropped[:5])
    return {k: v for k, v in state.items() if k.startswith(KEEP_PREFIXES)}


def resolve_checkpoint(params: dict) -> tuple[Path, dict]:
    """A local file, or a hub id resolved with ``hf_hub_download`` (only when it is not a local path).
    Returns the local path and the identity recorded in the cache."""
    ckpt = params.get("checkpoint")
    if not ckpt:
        raise ValueError(
            "cavp params: model 'full' needs 'checkpoint' (a local file or a hub id such as SimianLuo/Diff-Foley)"
        )
    return resolve_weights(str(ckpt), what="cavp params: checkpoint", filename=params.get("filename", HUB_FILENAME),
                           revision=params.get("revision"))


class CAVPEncoder:
    """FrozenEncoder for the cache stage: uint8 frames (B, T, 224, 224, 3) -> (B, T, D) float32 on CPU, T the
    clip grid's frame count (40 at 4 FPS over 10 s)."""

    def __init__(
        self, model: CAVPVideoEncoder, info: EncoderInfo, *, device: str, half: bool, chunk_frames: int,
        grid: ClipGrid,
    ) -> None:
        self.model = model
        self.info = info
        self.grid = grid
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.chunk_frames = chunk_frames

    def check_inputs(self, batch: torch.Tensor, lengths: torch.Tensor) -> None:
        want = self.grid.frame_shape  # (T, 224, 224, 3)
        if batch.dtype != torch.uint8 or batch.ndim != 5 or tuple(batch.shape[1:]) != want:
            raise ValueError(
                f"cavp.encode: batch must be uint8 (B, {', '.join(map(str, want))}), "
                f"got {batch.dtype} {tuple(batch.shape)}"
            )
        if lengths.shape != (batch.shape[0],):
            raise ValueError(
                f"cavp.encode: lengths must have shape ({batch.shape[0]},), got {tuple(lengths.shape)}"
            )
        if bool((lengths < 0).any()) or bool((lengths > want[0]).any()):
            raise ValueError(f"cavp.encode: lengths must lie in [0, {want[0]}], got {lengths.tolist()}")

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Padded frames are encoded like the reference does (zeros in); ``lengths`` is only validated."""
        self.check_inputs(batch, lengths)
        outs = []
        with torch.inference_mode():
            for t0 in range(0, batch.shape[1], self.chunk_frames):  # the reference encodes chunks independently
                chunk = batch[:, t0 : t0 + self.chunk_frames].to(self.device)  # (B, t, H, W, 3) uint8
                x = chunk.permute(0, 1, 4, 2, 3).to(self.dtype) / 255.0  # (B, t, 3, H, W) in [0, 1]
                outs.append(self.model(x).float().cpu())  # (B, t, D)
        return torch.cat(outs, dim=1)  # (B, T, D)


def build(params: dict, device: str = "cpu", grid: ClipGrid | None = None) -> CAVPEncoder:
    """params: ``model`` full|tiny; ``checkpoint`` (+ ``filename``, ``revision``) for full; ``seed`` for tiny;
    ``half`` (CUDA only); ``chunk_frames`` (default 40). ``grid``: the frames' clip grid (default 4 FPS, 10 s)."""
    grid = grid or ClipGrid()
    if grid.size != IMAGE_SIZE:
        raise ValueError(f"cavp: frames of {grid.size} px; the model reads {IMAGE_SIZE} x {IMAGE_SIZE}")
    kind, half = build_options("cavp", params, device)
    chunk_frames = positive_int("cavp", params, "chunk_frames", CHUNK_FRAMES)
    if kind in ("tiny", "random-full"):  # random-full: the released size, seeded random (benchmarks/smoke_full.py)
        cfg = CAVPConfig.tiny() if kind == "tiny" else CAVPConfig.full()
        seed = int(params.get("seed", 0))
        model = init_tiny_weights_(CAVPVideoEncoder(cfg), seed)
        identity = {f"{kind.replace('-', '_')}_seed": seed}
    else:
        cfg = CAVPConfig.full()
        path, identity = resolve_checkpoint(params)
        model = empty_on_cpu(lambda: CAVPVideoEncoder(cfg))
        load_checked(model, load_cavp_state_dict(path), source=f"CAVP checkpoint {str(path)!r}")
    model = freeze(model).to(device)
    if half:
        model = model.half()
    info = EncoderInfo(name="cavp", input_kind="frames", output_shape=(grid.n_frames, cfg.proj_dim),
                       config=asdict(cfg), checkpoint=identity)
    log.info("cavp: built %s model (D=%d) on %s%s", kind, cfg.proj_dim, device, " fp16" if half else "")
    return CAVPEncoder(model, info, device=device, half=half, chunk_frames=chunk_frames, grid=grid)


def preflight(params: dict, device: str) -> list[str]:
    """What ``build(params, device)`` would trip over, found without loading weights: half on CPU, a checkpoint
    whose keys or shapes differ from the full model's (read memory-mapped, compared with the model on meta)."""
    out = half_problem("cavp", params, device)
    path = existing_file(params.get("checkpoint"))
    if params.get("model", "full") == "full" and path is not None:
        own = meta_state(lambda: CAVPVideoEncoder(CAVPConfig.full()))
        out += shape_problems(f"cavp checkpoint {path.name}", own, shapes_of(load_cavp_state_dict(path)))
    return out
