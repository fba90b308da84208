"""Synchformer networks (audio-visual offset classifier behind DeSync), written for this project.

Module and parameter names follow the released checkpoint (``24-01-04T16-39-21.pt`` -> ``["model"]``, and
av-benchmark's flat ``synchformer_state_dict.pth``), so it loads key for key:

* ``vfeat_extractor``: Motionformer-style ViT-B/16 with divided space-time attention over 16-frame segments
  (``patch_embed_3d`` tubelets 2x16x16 -> 8x14x14 tokens, ``pos_embed`` + ``temp_embed``, 12 blocks of
  time attention (``timeattn``, ``norm3``), space attention (``attn``, ``norm1``), MLP (``norm2``)), ``norm``,
  then ``spatial_attn_agg``: one pre-norm transformer encoder layer with a CLS token per frame -> (S, 8, D).
  ``patch_embed`` (2D) is unused in the forward pass but is part of the checkpoint.
* ``afeat_extractor``: AST (``ast.embeddings`` / ``ast.encoder.layer.N`` / ``ast.layernorm``) over a
  128 x 66 log-mel segment (12 x 6 patches, stride 10), then ``freq_attn_agg`` (CLS over frequency) -> (S, 6, D).
* ``vproj`` / ``aproj`` and ``transformer``: 3 GPT-style blocks over ``[OFF, v(14*8), MOD, a(14*6)]`` with a learned
  position embedding (198 tokens) and ``off_head`` -> 21 logits for offsets -2.0 .. 2.0 s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from frozen.blocks import Mlp, SelfAttention, SplitAttention, pre_norm_residual, softmax_attention
from frozen.weights import load_checked, read_weights, unwrap

log = logging.getLogger(__name__)


@dataclass
class SynchformerConfig:
    dim: int = 768  # width of every transformer (both feature extractors and the sync transformer)
    v_depth: int = 12  # Motionformer blocks
    v_heads: int = 12
    a_depth: int = 12  # AST layers
    a_heads: int = 12
    mlp_ratio: int = 4
    img_size: int = 224
    patch: int = 16
    t_patch: int = 2  # tubelet length: 2 frames per temporal token
    seg_frames: int = 16  # video frames per segment (25 fps -> 0.64 s)
    n_mels: int = 128
    spec_t: int = 66  # spectrogram frames per segment after padding
    a_patch: int = 16
    a_stride: int = 10  # overlapping audio patches
    g_layers: int = 3  # sync transformer blocks
    g_heads: int = 8
    n_segments: int = 14  # segments per 4.8 s window
    n_classes: int = 21  # offsets -2.0 .. 2.0 s in 0.2 s steps

    @classmethod
    def tiny(cls) -> "SynchformerConfig":
        return cls(dim=16, v_depth=1, v_heads=2, a_depth=1, a_heads=2, img_size=32, g_layers=1, g_heads=2)

    @property
    def v_tokens(self) -> int:  # temporal tokens per video segment
        return self.seg_frames // self.t_patch

    @property
    def a_grid(self) -> tuple[int, int]:  # (frequency, time) patches per audio segment
        return ((self.n_mels - self.a_patch) // self.a_stride + 1, (self.spec_t - self.a_patch) // self.a_stride + 1)

    @property
    def seq_len(self) -> int:
        return 2 + self.n_segments * (self.v_tokens + self.a_grid[1])


class CLSEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer (GELU, LayerNorm eps 1e-6) that prepends a CLS token and returns it.

    Names match ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``linear1/2``, ``norm1/2``) plus ``cls_token``.
    """

    def __init__(self, dim: int, heads: int, ff: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, 1 + L, D)
        x = pre_norm_residual(x, self.norm1, self.self_attn, self.norm2, self.feed_forward)
        return x[:, 0]

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))


# ----------------------------------------------------------------------------------------------------- visual


class _PatchEmbed(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.proj = conv


class DividedAttention(nn.Module):
    """CLS attends to every token; each patch token attends to CLS plus its group (same place or same frame)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, over_time: bool) -> torch.Tensor:
        B, L, D = x.shape
        h, d = self.heads, D // self.heads
        n = (L - 1) // frames  # spatial tokens per frame
        q, k, v = (t.reshape(B, L, h, d).transpose(1, 2).reshape(B * h, L, d) for t in self.qkv(x).chunk(3, -1))
        q = q * d ** -0.5
        cls_out = softmax_attention(q[:, :1], k, v)  # (Bh, 1, d)

        def group(t):  # (Bh, f*n, d) -> (Bh*groups, members, d)
            t = t.reshape(B * h, frames, n, d)
            return (t.transpose(1, 2) if over_time else t).reshape(-1, frames if over_time else n, d)

        r = n if over_time else frames
        qg, kg, vg = group(q[:, 1:]), group(k[:, 1:]), group(v[:, 1:])
        kg = torch.cat([k[:, :1].repeat_interleave(r, 0), kg], dim=1)
        vg = torch.cat([v[:, :1].repeat_interleave(r, 0), vg], dim=1)
        out = softmax_attention(qg, kg, vg)
        out = out.reshape(B * h, n, frames, d).transpose(1, 2) if over_time else out.reshape(B * h, frames, n, d)
        out = torch.cat([cls_out, out.reshape(B * h, frames * n, d)], dim=1)
        return self.proj(out.reshape(B, h, L, d).transpose(1, 2).reshape(B, L, D))


class DividedSpaceTimeBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames, over_time=True)
        x = x + self.attn(self.norm1(x), frames, over_time=False)
        return x + self.mlp(self.norm2(x))


class MotionFormer(nn.Module):
    """(N, C, T=16, H, W) segments -> (N, T/2, D) per-frame-pair features."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        D, p = cfg.dim, cfg.patch
        self.cfg = cfg
        self.grid = cfg.img_size // p
        n_sp = self.grid ** 2
        self.patch_embed = _PatchEmbed(nn.Conv2d(3, D, p, stride=p))
        self.patch_embed_3d = _PatchEmbed(nn.Conv3d(3, D, (cfg.t_patch, p, p), stride=(cfg.t_patch, p, p)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_sp + 1, D))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.v_tokens, D))
        for t in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(t, std=0.02)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(D, cfg.v_heads, cfg.mlp_ratio) for _ in range(cfg.v_depth))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.spatial_attn_agg = CLSEncoderLayer(D, cfg.v_heads, cfg.mlp_ratio * D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[0]
        x = self.patch_embed_3d.proj(x)  # (N, D, t, h, w)
        _, D, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, t*h*w, D), time-major
        pos = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed[:, :t].repeat_interleave(h * w, 1)
        x = torch.cat([self.cls_token.expand(N, -1, -1), x], 1) + torch.cat([self.pos_embed[:, :1], pos], 1)
        for blk in self.blocks:
            x = blk(x, t)
        x = self.norm(x[:, 1:])  # (N, t*h*w, D)
        x = self.spatial_attn_agg(x.reshape(N * t, h * w, D))  # CLS over the places of each frame pair
        return x.reshape(N, t, D)


# ------------------------------------------------------------------------------------------------------ audio


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _ASTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = SplitAttention(dim, heads, sdpa=False)  # query, key, value; the output is output.dense
        self.output = _Dense(dim, dim)


class _ASTLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int):
        super().__init__()
        self.attention = _ASTAttention(dim, heads)
        self.intermediate = _Dense(dim, ff)
        self.output = _Dense(ff, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        x = x + self.attention.output.dense(self.attention.attention(self.layernorm_before(x)))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _ASTEmbeddings(nn.Module):
    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        D = cfg.dim
        f, t = cfg.a_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, D))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(1, D, cfg.a_patch, stride=cfg.a_stride)
        self.position_embeddings = nn.Parameter(torch.zeros(1, f * t + 2, D))
        for p in (self.cls_token, self.distillation_token, self.position_embeddings):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x):  # (N, T, F) -> (N, 2 + f*t, D)
        x = self.patch_embeddings.projection(x.transpose(1, 2)[:, None]).flatten(2).transpose(1, 2)  # f-major
        aux = [self.cls_token.expand(x.shape[0], -1, -1), self.distillation_token.expand(x.shape[0], -1, -1)]
        return torch.cat(aux + [x], dim=1) + self.position_embeddings


class _ASTModel(nn.Module):
    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        self.embeddings = _ASTEmbeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            _ASTLayer(cfg.dim, cfg.a_heads, cfg.mlp_ratio * cfg.dim) for _ in range(cfg.a_depth))
        self.layernorm = nn.LayerNorm(cfg.dim, eps=1e-12)

    def forward(self, x):
        x = self.embeddings(x)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class AST(nn.Module):
    """(N, T=66, F=128) normalised log-mel segments -> (N, t=6, D)."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ast = _ASTModel(cfg)
        self.freq_attn_agg = CLSEncoderLayer(cfg.dim, cfg.a_heads, cfg.mlp_ratio * cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, t = self.cfg.a_grid
        h = self.ast(x)[:, 2:]  # (N, f*t, D)
        N, _, D = h.shape
        h = h.reshape(N, f, t, D).transpose(1, 2).reshape(N * t, f, D)  # CLS over frequency per time step
        return self.freq_attn_agg(h).reshape(N, t, D)


# ------------------------------------------------------------------------------------------ sync transformer


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = SplitAttention(dim, heads, proj=True, sdpa=False, order=("key", "query", "value"))  # minGPT
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        return pre_norm_residual(x, self.ln1, self.attn, self.ln2, self.mlp)


class GlobalTransformer(nn.Module):
    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        D = cfg.dim
        self.vis_in_lnorm = nn.LayerNorm(D)
        self.aud_in_lnorm = nn.LayerNorm(D)
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, D))
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, D))
        self.pos_emb_cfg = nn.Module()
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.randn(1, cfg.seq_len, D))
        self.blocks = nn.Sequential(*[_Block(D, cfg.g_heads) for _ in range(cfg.g_layers)])
        self.ln_f = nn.LayerNorm(D)
        self.off_head = nn.Linear(D, cfg.n_classes)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # (B, Lv, D), (B, La, D) -> (B, cls)
        B = v.shape[0]
        x = torch.cat([self.OFF_tok.expand(B, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(B, -1, -1), self.aud_in_lnorm(a)], dim=1)
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb[:, :x.shape[1]]))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    def __init__(self, cfg: SynchformerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SynchformerConfig()
        self.vfeat_extractor = MotionFormer(cfg)
        self.afeat_extractor = AST(cfg)
        self.vproj = nn.Linear(cfg.dim, cfg.dim)
        self.aproj = nn.Linear(cfg.dim, cfg.dim)
        self.transformer = GlobalTransformer(cfg)
        for m in self.modules():  # trunc-normal linears and unit LayerNorms as the reference initialises them
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def extract_vfeats(self, segs: torch.Tensor) -> torch.Tensor:
        """(B, S, T=16, 3, H, W) normalised frames -> (B, S, 8, D)."""
        B, S = segs.shape[:2]
        x = segs.flatten(0, 1).transpose(1, 2)  # (BS, 3, T, H, W)
        return self.vfeat_extractor(x).reshape(B, S, -1, self.cfg.dim)

    def extract_afeats(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, S, F=128, T=66) normalised log-mels -> (B, S, 6, D)."""
        B, S = mels.shape[:2]
        return self.afeat_extractor(mels.flatten(0, 1).transpose(1, 2)).reshape(B, S, -1, self.cfg.dim)

    def compare_v_a(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """(B, S, tv, D), (B, S, ta, D) -> offset-class logits (B, n_classes)."""
        v, a = self.vproj(vis), self.aproj(aud)
        return self.transformer(v.flatten(1, 2), a.flatten(1, 2))


# -------------------------------------------------------------------------------------------------- loading


def load_synchformer(model: Synchformer, path: str | Path) -> None:
    """Strictly load a released checkpoint (``["model"]``/``["state_dict"]`` nesting and ``module.`` prefixes
    unwrapped). Missing or wrong-shaped keys raise; unexpected keys are reported (logged) and dropped; a longer
    ``transformer.pos_emb_cfg.pos_emb`` is trimmed to the model's tokens, as the reference does."""
    hint = ("If it holds the training config as Python objects, save its state dict once: torch.save(torch.load(p, "
            "weights_only=False)['model'], 'synchformer_state_dict.pth').")
    source = f"Synchformer checkpoint {str(path)!r}"
    sd = unwrap(read_weights(path, "Synchformer (evaluate.params.synchformer_ckpt)", hint=hint), source=source)
    own = model.state_dict()
    pk = "transformer.pos_emb_cfg.pos_emb"
    if pk in sd and pk in own and sd[pk].shape[1] > own[pk].shape[1]:
        log.warning("%s: trimming %s from %d to %d tokens", source, pk, sd[pk].shape[1], own[pk].shape[1])
        sd[pk] = sd[pk][:, :own[pk].shape[1]]
    load_checked(model, sd, source=source)
