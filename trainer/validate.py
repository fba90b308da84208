"""Validation metrics: MSE and per-token cosine similarity, teacher-forced (``tf_*``) and generated (``ar_*``: the
mapper's ``generate``, an autoregressive rollout or diffusion sampling), against a baseline that predicts the
training-set mean of each token position.

Diffusion mappers have no teacher forcing: their ``val_loss`` is the denoising objective on the validation clips
with noise and timesteps drawn from a fixed seed (comparable across epochs), and ``ar_*`` are sampled tokens
(fixed seeds too)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from trainer.data import Features


def loss_fn(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-mean MSE (the paper's sum over dims / T_c, divided by D) or L1 (AudioLDM-2's code)."""
    pred, target = pred.float(), target.float()
    return F.mse_loss(pred, target) if kind == "mse" else F.l1_loss(pred, target)


class _Acc:
    """Sums on the device of the predictions (float64); read once, in ``result`` (no wait per batch)."""

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens
        self.sq = self.ab = self.cos = None
        self.n, self.d = 0, 1

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.float(), target.float()  # (B, n_tokens, D)
        sums = (((pred - target) ** 2).mean(-1).sum(0).double(), (pred - target).abs().mean(-1).sum(0).double(),
                F.cosine_similarity(pred, target, dim=-1, eps=1e-8).sum(0).double())  # each (n_tokens,)
        if self.sq is None:
            self.sq, self.ab, self.cos = (torch.zeros(self.n_tokens, dtype=torch.float64, device=pred.device)
                                          for _ in range(3))
        self.sq += sums[0]
        self.ab += sums[1]
        self.cos += sums[2]
        self.n += pred.shape[0]

    def result(self, prefix: str) -> dict:
        n = max(self.n, 1)
        if self.sq is None:
            self.sq = self.ab = self.cos = torch.zeros(self.n_tokens, dtype=torch.float64)
        self.sq, self.ab, self.cos = self.sq.cpu(), self.ab.cpu(), self.cos.cpu()
        return {f"{prefix}_mse": float(self.sq.sum() / n / len(self.sq)),
                f"{prefix}_l1": float(self.ab.sum() / n / len(self.ab)),
                f"{prefix}_cos": float(self.cos.sum() / n / len(self.cos)),
                f"{prefix}_cos_per_token": [round(float(c), 6) for c in self.cos / n]}


@torch.no_grad()
def evaluate(mapper, data: Features, mean_token: torch.Tensor, *, batch: int = 64, loss: str = "mse",
             autocast: contextlib.AbstractContextManager | None = None) -> dict:
    """Metrics over ``data`` (``tf_*``, ``ar_*``, ``base_*``, and ``val_loss`` = teacher-forced training loss)."""
    was_training = mapper.training
    mapper.eval()
    n_tok = mapper.spec.n_tokens
    diffusion = mapper.spec.kind != "autoregressive" and hasattr(mapper, "denoise")
    tf, ar, base = _Acc(n_tok), _Acc(n_tok), _Acc(n_tok)
    obj_sum, obj_n = 0.0, 0
    for s in range(0, len(data), batch):
        cavp, tc, target = data.batch(np.arange(s, min(len(data), s + batch)))
        with autocast or contextlib.nullcontext():
            if diffusion:
                pred, goal = mapper(cavp, tc, target, generator=torch.Generator().manual_seed(1000 + s))
                obj_sum += float(loss_fn(loss, pred, goal)) * len(target)
                obj_n += len(target)
                gens = [torch.Generator().manual_seed(s + i) for i in range(len(target))]
                p_ar = mapper.generate(cavp, tc, generator=gens)  # (B, 8, D)
            else:
                tf.add(mapper(cavp, tc, target), target)  # (B, 8, D)
                p_ar = mapper.generate(cavp, tc)  # (B, 8, D)
        ar.add(p_ar, target)
        base.add(mean_token.to(target.device).expand_as(target), target)
    mapper.train(was_training)
    out = {**ar.result("ar"), **base.result("base"), "n_val": len(data)}
    if diffusion:
        out["val_loss"] = obj_sum / max(obj_n, 1)
    else:
        out.update(tf.result("tf"))
        out["val_loss"] = out["tf_mse"] if loss == "mse" else out["tf_l1"]
    return out
