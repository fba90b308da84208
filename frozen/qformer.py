"""BLIP-2 / InstructBLIP Q-Former (a BERT encoder with learned queries), as TimeChat uses it twice.

- frame Q-Former (``Qformer.bert.*``): bert-base sizes, cross-attention to the 1408-d image tokens in every
  2nd layer, word + position embeddings for the instruction text, a text FFN (``intermediate``/``output``) and
  a query FFN (``intermediate_query``/``output_query``) in every layer.
- video Q-Former (``video_Qformer.bert.*``): 2 layers, cross-attention in each (to 768-d frame tokens), no text
  input: only the embeddings LayerNorm and the query FFNs exist.

Semantics (docs/models.md section 3, "TimeChat visual path"): the embeddings are
``LayerNorm(cat([queries, word + position(text)]))``, text positions start at 0; self-attention runs over queries
+ text with the text padding masked as keys; only the query rows go through cross-attention and the query FFN, the
text rows through the text FFN; the output keeps the text rows: (N, Q + L, H).  Post-LN BERT blocks, exact GELU, LayerNorm eps 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frozen.blocks import SplitAttention


@dataclass
class QFormerConfig:
    hidden: int = 768  # width of the queries and text tokens (bert-base)
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072  # FFN width
    encoder_width: int = 1408  # width of the cross-attention memory
    cross_attention_freq: int = 2  # layer i has cross-attention when i % freq == 0
    vocab_size: int = 30523  # 0: no word/position embeddings (query-only Q-Former)
    max_positions: int = 512
    text_ffn: bool = True  # the text FFN (intermediate/output) exists
    ln_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden % self.heads != 0:
            raise ValueError(f"QFormerConfig: hidden {self.hidden} must be a multiple of heads {self.heads}")
        if self.cross_attention_freq < 1:
            raise ValueError(f"QFormerConfig: cross_attention_freq must be >= 1, got {self.cross_attention_freq}")

    @property
    def has_text(self) -> bool:
        return self.vocab_size > 0


class DenseLayerNorm(nn.Module):
    """``dense`` then ``LayerNorm(dense(x) + residual)`` (BERT's SelfOutput / Output)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class AttentionBlock(nn.Module):
    """Keys ``self.{query,key,value}`` and ``output.{dense,LayerNorm}``."""

    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.self = SplitAttention(cfg.hidden, cfg.heads, kv_dim=kv_width)  # SDPA, key padding mask
        self.output = DenseLayerNorm(cfg.hidden, cfg.hidden, cfg.ln_eps)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, memory, key_mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class QFormerLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, index: int) -> None:
        super().__init__()
        self.attention = AttentionBlock(cfg, cfg.hidden)
        self.crossattention = AttentionBlock(cfg, cfg.encoder_width) if index % cfg.cross_attention_freq == 0 else None
        if cfg.text_ffn:
            self.intermediate = Intermediate(cfg)
            self.output = DenseLayerNorm(cfg.intermediate, cfg.hidden, cfg.ln_eps)
        self.intermediate_query = Intermediate(cfg)
        self.output_query = DenseLayerNorm(cfg.intermediate, cfg.hidden, cfg.ln_eps)

    def forward(
        self, x: torch.Tensor, n_query: int, mask: torch.Tensor | None, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (N, Q + L, H) -> (N, Q + L, H); rows [0, Q) are the queries."""
        x = self.attention(x, x, mask)  # (N, Q + L, H)
        q, text = x[:, :n_query], x[:, n_query:]  # (N, Q, H), (N, L, H)
        if self.crossattention is not None:
            q = self.crossattention(q, memory, memory_mask)  # (N, Q, H)
        q = self.output_query(self.intermediate_query(q), q)
        if text.shape[1] == 0:
            return q
        if not hasattr(self, "intermediate"):
            raise RuntimeError("this Q-Former has no text FFN, so it cannot take text tokens")
        text = self.output(self.intermediate(text), text)  # (N, L, H)
        return torch.cat([q, text], dim=1)


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, i) for i in range(cfg.layers))


class QFormerEmbeddings(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.register_buffer("position_ids", torch.arange(cfg.max_positions).expand(1, -1).clone(), persistent=True)
        if cfg.has_text:
            self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
            self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)

    def forward(self, queries: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
        """queries (N, Q, H), input_ids (N, L) or None -> (N, Q + L, H)."""
        if input_ids is None:
            return self.LayerNorm(queries)
        if not hasattr(self, "word_embeddings"):
            raise RuntimeError("this Q-Former has no word embeddings, so it cannot take text tokens")
        pos = self.position_ids[:, : input_ids.shape[1]]  # (1, L), text positions start at 0
        text = self.word_embeddings(input_ids) + self.position_embeddings(pos)  # (N, L, H)
        return self.LayerNorm(torch.cat([queries, text.to(queries.dtype)], dim=1))


class QFormerBert(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = QFormerEmbeddings(cfg)
        self.encoder = QFormerEncoder(cfg)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries (N, Q, H), memory (N, M, encoder_width), input_ids/text_mask (N, L), memory_mask (N, M)
        (1 = real token) -> (N, Q + L, H), the text rows kept."""
        n, n_query = queries.shape[:2]
        x = self.embeddings(queries, input_ids)  # (N, Q + L, H)
        mask = None
        if input_ids is not None and text_mask is not None:
            ones = torch.ones(n, n_query, dtype=torch.bool, device=x.device)
            mask = torch.cat([ones, text_mask.to(x.device).bool()], dim=1)  # (N, Q + L)
        mem_mask = None if memory_mask is None else memory_mask.to(x.device).bool()
        for layer in self.encoder.layer:
            x = layer(x, n_query, mask, memory, mem_mask)
        return x


class QFormer(nn.Module):
    """Holds ``bert`` so that keys read ``<name>.bert.*`` like the released checkpoints."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.bert = QFormerBert(cfg)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.bert(*args, **kwargs)
