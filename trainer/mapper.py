"""The GPT-2 mapper (paper section 3.4): fused visual prefix -> 8 continuous pooled-AudioMAE tokens.

Teacher forcing (training): inputs_embeds = [prefix (P steps) ; targets 0..6]; the final hidden state (after
ln_f, no LM head) at position P-1+i is the prediction of target i, so position P-1 predicts target 0 and the last
position P+6 predicts target 7. Generation (AudioLDM-2's loop): run GPT-2 on the prefix, append the last
position's final hidden state as the next input, 8 times, keep the 8 appended states.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, GPT2Model

from frozen.gpt2 import GPT2_KEYS, TINY_GPT2, load_gpt2_pretrained, make_gpt2_config, random_full_gpt2
from trainer.config import MapperSpec, TrainConfig
from trainer.fusion import Fusion

log = logging.getLogger(__name__)

class Mapper(nn.Module):
    def __init__(self, spec: MapperSpec, gpt2: GPT2Model | None = None):
        super().__init__()
        self.spec = spec
        self.fusion = Fusion(spec)
        self.gpt2 = gpt2 if gpt2 is not None else GPT2Model(make_gpt2_config(spec.gpt2_config))
        self.gpt2.wte.requires_grad_(False)  # token embeddings are never used (inputs_embeds only)
        w = spec.width
        if spec.sos_eos:
            self.sos = nn.Parameter(torch.randn(1, 1, w) * 0.02)
            self.eos = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        if spec.target_proj:
            self.tgt_in = nn.Linear(spec.target_dim, w)
            self.tgt_out = nn.Linear(w, spec.target_dim)
        elif spec.target_dim != w:
            raise ValueError(f"the AudioMAE targets are {spec.target_dim}-d but GPT-2 is {w} wide; set "
                             "target_proj: true (or n_embd equal to the target dim in the tiny model)")

    def _in(self, c: torch.Tensor) -> torch.Tensor:
        return self.tgt_in(c) if self.spec.target_proj else c

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        return self.tgt_out(h) if self.spec.target_proj else h

    def prefix(self, cavp: torch.Tensor | None, tc: torch.Tensor | None) -> torch.Tensor:
        x = self.fusion(cavp, tc)  # (B, T, width)
        if self.spec.sos_eos:
            b = x.shape[0]
            x = torch.cat([self.sos.expand(b, -1, -1), x, self.eos.expand(b, -1, -1)], dim=1)  # (B, T+2, width)
        return x

    def forward(self, cavp: torch.Tensor | None, tc: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
        """Teacher-forced predictions (B, n_tokens, D) of ``target`` (B, n_tokens, D)."""
        x = self.prefix(cavp, tc)  # (B, P, width)
        p, n = x.shape[1], target.shape[1]
        x = torch.cat([x, self._in(target[:, :-1].to(x.dtype))], dim=1)  # (B, P + n - 1, width)
        h = self.gpt2(inputs_embeds=x).last_hidden_state  # (B, P + n - 1, width), after ln_f
        return self._out(h[:, p - 1: p - 1 + n])  # (B, n, D): position P-1+i predicts target i

    @torch.no_grad()
    def generate(self, cavp: torch.Tensor | None, tc: torch.Tensor | None, n_tokens: int | None = None,
                 use_cache: bool = True, generator=None) -> torch.Tensor:
        """Autoregressive rollout -> (B, n_tokens, D); ``use_cache=False`` reruns the whole sequence each step.
        Deterministic: ``generator`` is accepted (the diffusion mappers' interface) and unused."""
        n = n_tokens or self.spec.n_tokens
        x = self.prefix(cavp, tc)  # (B, P, width)
        preds = []
        if use_cache:
            cache = DynamicCache(config=self.gpt2.config)  # filled in place: the prefix, then one token a step
            h = self.gpt2(inputs_embeds=x, cache=cache, use_cache=True).last_hidden_state
            for i in range(n):
                c = self._out(h[:, -1:])  # (B, 1, D)
                preds.append(c)
                if i + 1 < n:
                    h = self.gpt2(inputs_embeds=self._in(c), cache=cache, use_cache=True).last_hidden_state
        else:
            for _ in range(n):
                c = self._out(self.gpt2(inputs_embeds=x, use_cache=False).last_hidden_state[:, -1:])
                preds.append(c)
                x = torch.cat([x, self._in(c)], dim=1)
        return torch.cat(preds, dim=1)  # (B, n, D)


def objective(model: nn.Module, a, b, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, what it should equal) for the training loss, for every mapper family: the autoregressive
    mapper's teacher-forced tokens against the targets, a diffusion mapper's denoising output against its goal."""
    out = model(a, b, target)
    return out if isinstance(out, tuple) else (out, target)


def build_mapper(cfg: TrainConfig, dims: dict) -> nn.Module:
    """The mapper for ``cfg`` with the sizes found in the cache (``dims`` from ``trainer.data.check_cache``):
    ``Mapper`` (autoregressive), ``DiffusionMapper`` (Diff-Mapper) or a V2A-Mapper (trainer/v2a_mapper.py)."""
    if cfg.is_v2a:
        from trainer.v2a_mapper import build_v2a_mapper
        return build_v2a_mapper(cfg, dims)
    torch.manual_seed(cfg.seed)
    if cfg.model == "full":
        if cfg.pretrained:
            gpt2 = load_gpt2_pretrained(cfg.gpt2, cfg.gpt2_subfolder, cfg.dropout)
        else:  # AudioLDM-2's shape, random weights (benchmarks)
            gpt2 = random_full_gpt2(cfg.dropout)
        gcfg = {k: getattr(gpt2.config, k) for k in GPT2_KEYS if hasattr(gpt2.config, k)}
    else:
        p = 0.0 if cfg.dropout is None else cfg.dropout
        gcfg = {**TINY_GPT2, "n_embd": cfg.n_embd or dims["target_dim"], "vocab_size": 1,
                "resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p}
        gpt2 = None
    spec = MapperSpec(encoders=cfg.encoders, fusion=cfg.fusion, tc_pool=cfg.tc_pool, upsample=cfg.upsample,
                      cavp_steps=dims["cavp_steps"], cavp_dim=dims["cavp_dim"],
                      timechat_windows=dims["timechat_windows"],
                      timechat_queries=dims["timechat_queries"], timechat_dim=dims["timechat_dim"],
                      n_tokens=dims["n_tokens"], timechat_stride=dims.get("timechat_stride"), target_dim=dims["target_dim"], sos_eos=cfg.sos_eos,
                      target_proj=cfg.target_proj, gpt2_config=gcfg, kind=cfg.mapper,
                      diffusion=cfg.diffusion_spec() if cfg.mapper == "diffusion" else {})
    extra = spec.n_tokens if cfg.mapper == "autoregressive" else 1 + 2 * spec.n_tokens  # diffusion: t, C_t, queries
    if spec.prefix_len + extra > int(gcfg["n_positions"]):
        raise ValueError(f"the sequence ({spec.prefix_len} prefix + {extra}) is longer than GPT-2's "
                         f"n_positions {gcfg['n_positions']}")
    torch.manual_seed(cfg.seed)
    if cfg.mapper == "diffusion":
        from trainer.diffusion_mapper import DiffusionMapper
        return DiffusionMapper(spec, gpt2)
    return Mapper(spec, gpt2)


def mapper_from_spec(d: dict) -> nn.Module:
    """An untrained mapper of the family and sizes a checkpoint's ``mapper.json`` records (its ``kind``)."""
    from trainer.v2a_mapper import KINDS as V2A_KINDS

    kind = d.get("kind", "autoregressive")  # a spec without one: the first family (older checkpoints and folders)
    if kind not in ("autoregressive", "diffusion", *V2A_KINDS):
        raise ValueError(f"the mapper's spec names an unknown mapper kind {kind!r}; this code builds autoregressive, "
                         f"diffusion, {', '.join(V2A_KINDS)}")
    if kind.startswith("v2a_"):
        from trainer.v2a_mapper import V2ASpec, make_v2a_mapper
        return make_v2a_mapper(V2ASpec.from_dict(d))
    if kind == "diffusion":
        from trainer.diffusion_mapper import DiffusionMapper
        return DiffusionMapper(MapperSpec.from_dict(d))
    return Mapper(MapperSpec.from_dict(d))


def load_mapper(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the mapper saved by the trainer (``<run>/best`` or ``<run>/last``) in eval mode, for ``infer/``;
    its family comes from the checkpoint (``mapper.json`` ``kind``)."""
    from trainer.checkpoint import read_checkpoint

    ck = read_checkpoint(checkpoint_dir, with_optimizer=False)
    mapper = mapper_from_spec(ck["mapper"])
    mapper.load_state_dict(ck["weights"], strict=True)
    return mapper.to(device).eval()
