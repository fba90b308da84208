"""Transformer building blocks shared by the frozen networks (EVA ViT, AudioMAE, PaSST, ImageBind, Synchformer's
Motionformer / AST / sync transformer, the Q-Former).

Names: each block's parameters carry the names the released checkpoints use, so ``state_dict()`` of a network equals
its released key list (``tests/data/*.tsv``) with no renaming at load time:

    Attention      fused ``qkv`` + ``proj`` (timm: AudioMAE, PaSST; EVA with ``q_bias``/``v_bias``), SDPA
    SplitAttention separate ``query``/``key``/``value`` (+ ``proj``), Hugging Face BERT/AST and minGPT names,
                   self- or cross-attention, SDPA or the explicit softmax of the reference code
    SelfAttention  ``torch.nn.MultiheadAttention`` used as self-attention (``in_proj_weight``, ``out_proj``;
                   ImageBind, Synchformer's aggregation layers)
    Mlp            ``fc1`` -> exact GELU -> ``fc2``
    Block          pre-LN ViT block with timm names ``norm1``/``attn``/``norm2``/``mlp``; a network whose released
                   block has other names (ImageBind's ``norm_1``/``norm_2``) composes the same parts with
                   :func:`pre_norm_residual`

Numerics are those of each reference: SDPA where the reference used it (its default scale ``d ** -0.5``), the
explicit ``softmax((q / sqrt(d)) k^T) v`` where the reference computed it by hand.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, T, C) -> (N, heads, T, C / heads)."""
    n, t, c = x.shape
    return x.reshape(n, t, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, T, d) -> (N, T, heads * d)."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T) v`` written out, ``q`` already scaled: q (..., Tq, d), k and v (..., Tk, d) -> (..., Tq, d)."""
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with the exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` Linear and ``proj`` (timm), computed with SDPA.

    ``qkv_bias``: the fused Linear has a bias (timm default). ``qv_bias``: instead, separate ``q_bias`` and
    ``v_bias`` parameters and a zero key bias, ``cat(q_bias, 0, v_bias)`` (EVA / BEiT).
    """

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, qv_bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias and not qv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        if hasattr(self, "q_bias"):
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])  # (3C,)
            qkv = F.linear(x, self.qkv.weight, bias)  # (N, T, 3C)
        else:
            qkv = self.qkv(x)  # (N, T, 3C)
        q, k, v = qkv.reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, H, T, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, d), scale d ** -0.5
        return self.proj(merge_heads(out))  # (N, T, C)


class SplitAttention(nn.Module):
    """Multi-head attention with separate ``query``/``key``/``value`` Linears (BERT, AST, minGPT names).

    ``kv_dim``: width of the attended states (cross-attention; default ``dim``). ``proj``: an output Linear
    ``proj`` (minGPT; BERT/AST keep theirs outside, as ``output.dense``). ``order``: the registration order of the
    three projections, as in the released checkpoint (minGPT registers ``key`` first). ``sdpa``: SDPA with an
    optional key mask (BERT / Q-Former); otherwise the explicit softmax of the reference code (AST, minGPT).
    """

    def __init__(self, dim: int, heads: int, *, kv_dim: int | None = None, proj: bool = False, sdpa: bool = True,
                 order: tuple[str, str, str] = ("query", "key", "value")) -> None:
        super().__init__()
        if dim % heads or sorted(order) != ["key", "query", "value"]:
            raise ValueError(f"SplitAttention: dim {dim} must divide by heads {heads}; order {order} must name "
                             "query, key and value once")
        self.heads, self.sdpa = heads, sdpa
        for name in order:
            setattr(self, name, nn.Linear(dim if name == "query" else (kv_dim or dim), dim))
        self.proj = nn.Linear(dim, dim) if proj else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, dim), memory (N, M, kv_dim) (default: x), key_mask (N, M) bool, True = attend -> (N, T, dim)."""
        memory = x if memory is None else memory
        q = split_heads(self.query(x), self.heads)  # (N, H, T, d)
        k, v = split_heads(self.key(memory), self.heads), split_heads(self.value(memory), self.heads)  # (N, H, M, d)
        if self.sdpa:
            mask = None if key_mask is None else key_mask[:, None, None, :]  # (N, 1, 1, M)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, T, d)
        elif key_mask is not None:
            raise ValueError("SplitAttention: a key mask needs sdpa=True")
        else:
            out = softmax_attention(q / math.sqrt(q.shape[-1]), k, v)  # (N, H, T, d)
        out = merge_heads(out)  # (N, T, dim)
        return self.proj(out) if self.proj is not None else out


class SelfAttention(nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` (batch first) called as self-attention: ``attn(x)`` = ``attn(x, x, x)[0]``.
    Its parameters keep PyTorch's names (``in_proj_weight``, ``in_proj_bias``, ``bias_k``/``bias_v``,
    ``out_proj``), which are the names of the checkpoints trained with it."""

    def __init__(self, dim: int, heads: int, *, add_bias_kv: bool = False) -> None:
        super().__init__(dim, heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, C) -> (N, T, C)
        return super().forward(x, x, x, need_weights=False)[0]


Module = Callable[[torch.Tensor], torch.Tensor]


def pre_norm_residual(x: torch.Tensor, norm1: Module, attn: Module, norm2: Module, mlp: Module) -> torch.Tensor:
    """The pre-LN transformer update: ``x + attn(norm1(x))``, then ``+ mlp(norm2(.))``."""
    x = x + attn(norm1(x))
    return x + mlp(norm2(x))


class Block(nn.Module):
    """Pre-LN ViT block with timm names: ``norm1``, ``attn`` (:class:`Attention`), ``norm2``, ``mlp`` (:class:`Mlp`)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, *, eps: float = 1e-6, qkv_bias: bool = True,
                 qv_bias: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, qv_bias=qv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, C) -> (N, T, C)
        return pre_norm_residual(x, self.norm1, self.attn, self.norm2, self.mlp)
