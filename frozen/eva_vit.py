"""EVA-CLIP ViT-g/14 image tower as used by BLIP-2 / InstructBLIP / TimeChat (``visual_encoder.*``).

Facts (docs/models.md section 3, "TimeChat visual path"): patch 14 at 224 (256 patches + CLS = 257 tokens), width 1408,
39 pre-LayerNorm blocks (eps 1e-6), 16 heads of 88, MLP 6144 with exact GELU, qkv without bias plus separate
``q_bias``/``v_bias`` (the key bias is zero), absolute position embedding, no final norm, no head.
Parameter names reproduce the released ``eva_vit_g.pth`` keys (without the ``visual_encoder.`` prefix); the blocks
are the shared :class:`frozen.blocks.Block` (timm names).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from frozen.blocks import Block


@dataclass
class EvaViTConfig:
    """Sizes of the EVA ViT."""

    img_size: int = 224
    patch: int = 14
    width: int = 1408
    depth: int = 39  # the released file holds 40 blocks; BLIP-2 uses the first 39
    heads: int = 16
    mlp_dim: int = 6144
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.img_size % self.patch != 0:
            raise ValueError(f"EvaViTConfig: img_size {self.img_size} must be a multiple of patch {self.patch}")
        if self.width % self.heads != 0:
            raise ValueError(f"EvaViTConfig: width {self.width} must be a multiple of heads {self.heads}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch) ** 2

    @property
    def num_tokens(self) -> int:
        """Patches + CLS (257 for the full model)."""
        return self.num_patches + 1

    @classmethod
    def full(cls) -> "EvaViTConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "EvaViTConfig":
        """Same classes, width 32, 2 blocks, 4 heads; still patch 14 at 224 (257 tokens)."""
        return cls(width=32, depth=2, heads=4, mlp_dim=64)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (N, C, h, w)
        return x.flatten(2).transpose(1, 2)  # (N, h*w, C)


def eva_block(cfg: EvaViTConfig) -> Block:
    """A pre-LN block whose attention has ``q_bias``/``v_bias`` and no key bias, exact GELU MLP."""
    return Block(cfg.width, cfg.heads, cfg.mlp_dim, eps=cfg.ln_eps, qkv_bias=False, qv_bias=True)


class EvaViT(nn.Module):
    """images (N, 3, S, S), CLIP-normalised -> tokens (N, 1 + (S/p)^2, width); no final norm."""

    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(eva_block(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (N, P, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (N, 1 + P, C)
        for blk in self.blocks:
            x = blk(x)
        return x  # (N, 1 + P, C)


def half_matmul_weights_(vit: EvaViT) -> EvaViT:
    """The reference's ``convert_weights_to_fp16``: Linear/Conv weights to fp16, LayerNorms, tokens, positions
    and q/v biases stay fp32. Run it under ``torch.autocast(float16)``: the residual stream then stays fp32."""
    for m in vit.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.half()
    return vit
