"""V2A-Mapper (Wang et al., AAAI 2024, arXiv 2308.09300): CLIP image embeddings of a video -> one CLAP audio
embedding, which AudioLDM turns into sound (infer/audioldm.py).

What we take from the paper (its abstract and Fig. 2 as summarised publicly, and the MFM-Mapper paper's account of
it, sections 2 and 4.4.3): frozen CLIP gives the visual embedding E_v, frozen CLAP the audio embedding E_a; a small
mapper, trained from scratch with an MSE loss on {E_v, E_a} pairs, translates E_v into CLAP space. Two mappers are
compared: a *regression* mapper (one vector in, one vector out: an aggregator sigma pools the frames first; slightly
better relevance) and a *generative* diffusion mapper (better fidelity and variability), whose transformer reads
the timestep embedding, the visual embeddings, the noisy CLAP embedding and a learnable token, and whose output at
the learnable token is the prediction (the DALL-E 2 diffusion prior's design). Depth, width, schedule and sampler
are not in what we could read: they are settings (``v2a_*`` and the diffusion params of ``TrainConfig``).

    regression:  mean (or max) over the T frames -> MLP -> (B, 1, D_clap)
    generative:  [t ; Linear(E_v) per frame (T) ; noisy E_a (1) ; learnable token (1)] -> causal transformer
                 (GPT-2 blocks, random init) -> output at the learnable token; DDPM training, DDIM sampling
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.diffusion_mapper import DenoiserCore

KINDS = ("v2a_regression", "v2a_diffusion")


@dataclass
class V2ASpec:
    """Everything needed to rebuild a V2A-Mapper without the cache (saved as ``mapper.json``)."""

    kind: str
    clip_steps: int
    clip_dim: int
    n_tokens: int  # 1: one CLAP embedding
    target_dim: int
    width: int
    layers: int
    heads: int
    aggregate: str = "mean"
    dropout: float = 0.0
    diffusion: dict = field(default_factory=dict)

    @property
    def encoders(self) -> str:
        """The cache group the mapper reads (infer/ uses it to pick the features)."""
        return "clip"

    def gpt2_config(self) -> dict:
        return {"n_embd": self.width, "n_layer": self.layers, "n_head": self.heads, "vocab_size": 1,
                "n_positions": max(64, 1 + self.clip_steps + 2 * self.n_tokens), "resid_pdrop": self.dropout,
                "embd_pdrop": self.dropout, "attn_pdrop": self.dropout}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "V2ASpec":
        return cls(**d)


class V2ARegressionMapper(nn.Module):
    """Aggregated CLIP embedding -> MLP (``layers`` hidden layers of ``width``, GELU) -> CLAP embedding."""

    def __init__(self, spec: V2ASpec):
        super().__init__()
        self.spec = spec
        dims = [spec.clip_dim] + [spec.width] * max(1, spec.layers)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(spec.dropout)]
        self.mlp = nn.Sequential(*layers, nn.Linear(spec.width, spec.n_tokens * spec.target_dim))

    def aggregate(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.to(self.mlp[0].weight.dtype)  # (B, T, D_clip)
        return x.mean(1) if self.spec.aggregate == "mean" else x.amax(1)  # (B, D_clip)

    def forward(self, clip: torch.Tensor, _unused=None, target: torch.Tensor | None = None) -> torch.Tensor:
        out = self.mlp(self.aggregate(clip))  # (B, n * D)
        return out.view(-1, self.spec.n_tokens, self.spec.target_dim).float()  # (B, 1, D)

    @torch.no_grad()
    def generate(self, clip: torch.Tensor, _unused=None, generator=None, **_) -> torch.Tensor:
        """Deterministic: ``generator`` is accepted (the shared interface) and unused."""
        return self.forward(clip)


class V2ADiffusionMapper(DenoiserCore):
    """The generative V2A-Mapper: a causal transformer denoiser conditioned on the CLIP frame sequence."""

    def __init__(self, spec: V2ASpec):
        from transformers import GPT2Model

        from frozen.gpt2 import make_gpt2_config

        super().__init__()
        self.spec = spec
        self.clip_in = nn.Linear(spec.clip_dim, spec.width)
        self.backbone = GPT2Model(make_gpt2_config(spec.gpt2_config()))
        self.backbone.wte.requires_grad_(False)  # inputs_embeds only
        self._init_core(spec.width, spec.n_tokens, spec.target_dim, spec.diffusion,
                        target_proj=spec.width != spec.target_dim)

    def prefix(self, clip: torch.Tensor, _unused=None) -> torch.Tensor:
        return self.clip_in(clip.to(self.clip_in.weight.dtype))  # (B, T, width)


def make_v2a_mapper(spec: V2ASpec) -> nn.Module:
    if spec.kind not in KINDS:
        raise ValueError(f"V2A-Mapper kind {spec.kind!r} is not one of {KINDS}")
    return V2ARegressionMapper(spec) if spec.kind == "v2a_regression" else V2ADiffusionMapper(spec)


def build_v2a_mapper(cfg: TrainConfig, dims: dict) -> nn.Module:
    """The V2A-Mapper for ``cfg`` with the cache's sizes (``clip_steps``, ``clip_dim``, ``target_dim``); ``tiny``
    shrinks it to width ``n_embd`` (default 32), 2 layers, 2 heads. Both are trained from scratch, as in the paper."""
    tiny = cfg.model == "tiny"
    spec = V2ASpec(kind=cfg.mapper, clip_steps=int(dims["clip_steps"]), clip_dim=int(dims["clip_dim"]),
                   n_tokens=int(dims["n_tokens"]), target_dim=int(dims["target_dim"]),
                   width=(cfg.n_embd or 32) if tiny else cfg.v2a_width, layers=2 if tiny else cfg.v2a_layers,
                   heads=2 if tiny else cfg.v2a_heads, aggregate=cfg.v2a_aggregate,
                   dropout=0.0 if cfg.dropout is None else float(cfg.dropout),
                   diffusion=cfg.diffusion_spec() if cfg.mapper == "v2a_diffusion" else {})
    if spec.width % spec.heads:
        raise ValueError(f"train params: v2a_width {spec.width} is not a multiple of v2a_heads {spec.heads}")
    torch.manual_seed(cfg.seed)
    return make_v2a_mapper(spec)
