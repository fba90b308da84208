"""Diffusion mappers: the paper's Diff-Mapper ablation (section 4.4.3) and the core V2A-Mapper's generative mapper
shares (trainer/v2a_mapper.py).

Diff-Mapper: the same GPT-2 backbone as the autoregressive mapper reads one sequence

    [timestep embedding t (1) ; fused visual embeddings V_e (P) ; noisy tokens C_t (n) ; learnable tokens (n)]

and its final hidden states (after ln_f) at the n learnable tokens are the denoising prediction. GPT-2 is causal,
so the learnable tokens, placed last, see everything before them. Training: the standard DDPM objective with
diffusers' ``DDPMScheduler`` (random t, ``add_noise``, MSE against the clean tokens, the noise or the velocity,
following ``prediction_type``). Sampling: ``DDIMScheduler`` with the same betas, from pure noise C_T to C_0.

Where the paper is silent (our defaults, all settings in ``TrainConfig``): the output predicts the clean tokens
(``sample``, as the DALL-E 2 prior that V2A-Mapper follows), a cosine schedule of 1000 steps, 50 DDIM steps with
eta 0, and the targets are diffused after normalisation by the training set's per-token mean and global std.

Both mapper families share one interface: ``forward`` gives what the training loss compares (see
``trainer.mapper.objective``) and ``generate(a, b, generator=...) -> (B, n_tokens, D)``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def make_schedulers(d: dict):
    """(DDPMScheduler for training noise, DDIMScheduler for sampling) from a spec's ``diffusion`` dict."""
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(num_train_timesteps=int(d["train_steps"]), beta_schedule=d["beta_schedule"],
                          prediction_type=d["prediction_type"], clip_sample=False)
    sample = DDIMScheduler.from_config(train.config, clip_sample=False, set_alpha_to_one=True)  # last step: C_0
    return train, sample


def _noise(shape: tuple, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise drawn on the CPU: one generator for the batch, a list (one per row, so a row's noise does not
    depend on its batch), or None (the global RNG). Moved to ``device`` afterwards, so CPU and GPU agree."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}: give one per clip")
        x = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    else:
        x = torch.randn(shape, generator=generator)
    return x.to(device=device, dtype=dtype)


class DenoiserCore(nn.Module):
    """The diffusion machinery around a causal transformer ``backbone`` (a ``GPT2Model`` fed ``inputs_embeds``).

    Subclasses define ``prefix(a, b) -> (B, P, width)`` (the visual condition) and set ``n_tokens``, ``target_dim``.
    """

    def _init_core(self, width: int, n_tokens: int, target_dim: int, diffusion: dict, target_proj: bool) -> None:
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.n_tokens, self.target_dim, self.diff = n_tokens, target_dim, dict(diffusion)
        self.t_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embed = TimestepEmbedding(width, width)
        self.queries = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)  # the learnable tokens
        self.proj = target_proj
        if target_proj:
            self.noisy_in = nn.Linear(target_dim, width)
            self.pred_out = nn.Linear(width, target_dim)
        elif target_dim != width:
            raise ValueError(f"the targets are {target_dim}-d but the backbone is {width} wide; set target_proj: true "
                             "(or a backbone width equal to the target dim)")
        self.register_buffer("data_mean", torch.zeros(n_tokens, target_dim))
        self.register_buffer("data_std", torch.ones(()))
        self.train_sched, _ = make_schedulers(self.diff)

    # ---- data normalisation (buffers: saved with the weights) ------------------------------------------------
    @torch.no_grad()
    def set_data_stats(self, mean: torch.Tensor, std: torch.Tensor | float) -> None:
        if self.diff.get("normalize", True):
            self.data_mean.copy_(mean.reshape(self.data_mean.shape))
            self.data_std.fill_(max(float(std), 1e-6))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.data_mean) / self.data_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.data_std + self.data_mean

    # ---- the network ------------------------------------------------------------------------------------------
    def denoise(self, a, b, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The backbone's prediction (B, n, D) for noisy normalised tokens ``xt`` (B, n, D) at timesteps ``t`` (B,)."""
        pre = self.prefix(a, b)  # (B, P, width)
        bsz, dtype = pre.shape[0], pre.dtype
        temb = self.t_embed(self.t_proj(t.to(pre.device)).to(dtype))[:, None]  # (B, 1, width)
        xin = self.noisy_in(xt.to(dtype)) if self.proj else xt.to(dtype)  # (B, n, width)
        seq = torch.cat([temb, pre, xin, self.queries.to(dtype).expand(bsz, -1, -1)], dim=1)  # (B, 1+P+2n, width)
        h = self.backbone(inputs_embeds=seq).last_hidden_state[:, -self.n_tokens:]  # (B, n, width), after ln_f
        return self.pred_out(h) if self.proj else h

    def forward(self, a, b, target: torch.Tensor, generator: torch.Generator | None = None):
        """One denoising training example per row: returns (prediction, what it should equal), both (B, n, D)."""
        x0 = self.normalize(target)  # (B, n, D)
        noise = _noise(tuple(x0.shape), generator, x0.device)
        t = torch.randint(0, self.train_sched.config.num_train_timesteps, (x0.shape[0],), generator=generator)
        t = t.to(x0.device)
        xt = self.train_sched.add_noise(x0, noise, t)
        pred = self.denoise(a, b, xt, t)
        ptype = self.diff["prediction_type"]
        goal = x0 if ptype == "sample" else noise if ptype == "epsilon" else self.train_sched.get_velocity(x0, noise, t)
        return pred.float(), goal

    @torch.no_grad()
    def generate(self, a, b, n_tokens: int | None = None, generator=None, steps: int | None = None,
                 eta: float | None = None, **_) -> torch.Tensor:
        """DDIM sampling from pure noise -> (B, n_tokens, D) in the targets' units. ``generator``: one
        ``torch.Generator``, one per clip, or None (the global RNG)."""
        if n_tokens not in (None, self.n_tokens):
            raise ValueError(f"this diffusion mapper makes {self.n_tokens} tokens, not {n_tokens}")
        ref = a if a is not None else b
        _, sched = make_schedulers(self.diff)
        sched.set_timesteps(int(steps or self.diff["sample_steps"]))
        eta = float(self.diff.get("eta", 0.0) if eta is None else eta)
        shape = (ref.shape[0], self.n_tokens, self.target_dim)
        x = _noise(shape, generator, ref.device) * sched.init_noise_sigma  # C_T: (B, n, D)
        for t in sched.timesteps:
            pred = self.denoise(a, b, x, t.expand(shape[0])).float()
            var = _noise(shape, generator, ref.device) if eta > 0 else None
            x = sched.step(pred, t, x, eta=eta, variance_noise=var).prev_sample
        return self.denormalize(x)  # C_0: (B, n, D)


@torch.no_grad()
def target_stats(data, chunk: int = 1024) -> tuple[torch.Tensor, float]:
    """Per-token mean (n, D) and global std of the targets of ``data`` (a ``trainer.data.Features``)."""
    total, sq, n = None, 0.0, 0
    for s in range(0, len(data), chunk):
        t = data.batch(np.arange(s, min(len(data), s + chunk)))[2].double()  # (b, n, D)
        total = t.sum(0) if total is None else total + t.sum(0)
        n += t.shape[0]
    mean = total / n
    for s in range(0, len(data), chunk):
        t = data.batch(np.arange(s, min(len(data), s + chunk)))[2].double()
        sq += float(((t - mean) ** 2).sum())
    return mean.float(), (sq / (n * mean.numel())) ** 0.5


class DiffusionMapper(DenoiserCore):
    """Diff-Mapper: the fused CAVP/TimeChat prefix and AudioLDM-2's GPT-2 as the denoiser (paper 4.4.3)."""

    def __init__(self, spec, gpt2=None):
        from transformers import GPT2Model

        from trainer.fusion import Fusion
        from frozen.gpt2 import make_gpt2_config

        super().__init__()
        self.spec = spec
        self.fusion = Fusion(spec)
        self.backbone = gpt2 if gpt2 is not None else GPT2Model(make_gpt2_config(spec.gpt2_config))
        self.backbone.wte.requires_grad_(False)  # inputs_embeds only
        self._init_core(spec.width, spec.n_tokens, spec.target_dim, spec.diffusion, spec.target_proj)
        if spec.sos_eos:
            self.sos = nn.Parameter(torch.randn(1, 1, spec.width) * 0.02)
            self.eos = nn.Parameter(torch.randn(1, 1, spec.width) * 0.02)

    def prefix(self, cavp, tc) -> torch.Tensor:
        x = self.fusion(cavp, tc)  # (B, T, width)
        if self.spec.sos_eos:
            b = x.shape[0]
            x = torch.cat([self.sos.expand(b, -1, -1), x, self.eos.expand(b, -1, -1)], dim=1)  # (B, T+2, width)
        return x
