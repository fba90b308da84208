"""Time-aligned fusion of CAVP and TimeChat features (paper section 3.2, Algorithm 1, Tables 2 and 3).

CAVP gives one 512-d step per frame (40 steps for 10 s at 4 FPS); TimeChat gives W windows of 32 query tokens.
Each window is pooled to one step (mean over the queries by default) and the W steps are upsampled to CAVP's
40 steps (nearest = replication), then:
- ``concat`` (default, Algorithm 1): channel concat then Linear to the GPT-2 width;
- ``add``: the aligned streams are summed directly (zero-padding the narrower one when the dims differ), then
  the same Linear to the width. Projecting each stream by its own Linear and summing would be *exactly*
  concat + Linear (W[a; b] = W1 a + W2 b), so that would not be an ablation; a parameter-free sum is;
- ``cat``: no time alignment: each stream is projected to the width and they are concatenated along time
  (40 + W steps, or 40 + 32 W with ``tc_pool: none``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import MapperSpec


def pool_timechat(tc: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, W, Q, D) -> (B, W, D) by mean/max over the Q queries, or (B, W*Q, D) for ``none``."""
    if tc.ndim != 4:
        raise ValueError(f"timechat features must be (B, W, Q, D), got {tuple(tc.shape)}")
    if mode == "mean":
        return tc.mean(dim=2)
    if mode == "max":
        return tc.amax(dim=2)
    return tc.flatten(1, 2)  # (B, W*Q, D)


def upsample_time(x: torch.Tensor, steps: int, mode: str = "nearest", stride: int | None = None) -> torch.Tensor:
    """(B, W, D) -> (B, steps, D) by replication: ``nearest`` gives step i window floor(i W / steps); ``window``
    gives frame i the window that holds it, min(i // stride, W - 1) (differs when stride does not divide 40,
    e.g. window/stride 32: frames 0-31 -> window 0, 32-39 -> window 1); ``linear`` interpolates."""
    if mode == "window":
        if not stride:
            raise ValueError("upsample 'window' needs the TimeChat stride (cache attrs params.stride or timechat_stride)")
        idx = torch.clamp(torch.arange(steps, device=x.device) // stride, max=x.shape[1] - 1)
        return x.index_select(1, idx)  # (B, steps, D)
    if x.shape[1] == steps:
        return x
    y = x.transpose(1, 2)  # (B, D, W)
    if mode == "nearest":
        y = F.interpolate(y, size=steps, mode="nearest")
    else:
        y = F.interpolate(y, size=steps, mode="linear", align_corners=False)
    return y.transpose(1, 2)  # (B, steps, D)


class Fusion(nn.Module):
    def __init__(self, spec: MapperSpec):
        super().__init__()
        self.spec = spec
        dc, dt, width = spec.cavp_dim, spec.timechat_dim, spec.width
        if spec.encoders == "cavp":
            self.proj = nn.Linear(dc, width)
        elif spec.encoders == "timechat":
            self.proj = nn.Linear(dt, width)
        elif spec.fusion == "concat":
            self.proj = nn.Linear(dc + dt, width)
        elif spec.fusion == "add":
            self.proj = nn.Linear(max(dc, dt), width)
        else:  # cat along time: one projection per stream
            self.proj = nn.Linear(dc, width)
            self.proj_tc = nn.Linear(dt, width)

    def timechat_steps(self, tc: torch.Tensor) -> torch.Tensor:
        """Raw (B, W, Q, D) or already pooled (B, W', D) -> pooled (B, W', D) in the compute dtype."""
        return pool_timechat(tc, self.spec.tc_pool) if tc.ndim == 4 else tc

    def forward(self, cavp: torch.Tensor | None, tc: torch.Tensor | None) -> torch.Tensor:
        """cavp (B, 40, Dc), tc (B, W, Q, Dt) or pooled (B, W, Dt) -> (B, T_prefix, width)."""
        s = self.spec
        dtype = self.proj.weight.dtype  # cached features are float16: compute in the module's dtype
        cavp = cavp.to(dtype) if cavp is not None else None
        if s.encoders == "cavp":
            return self.proj(cavp)  # (B, 40, width)
        tc = self.timechat_steps(tc.to(dtype))  # (B, W, Dt)
        if s.fusion == "cat" and s.encoders == "both":
            return torch.cat([self.proj(cavp), self.proj_tc(tc)], dim=1)  # (B, 40 + W, width)
        tc = upsample_time(tc, s.cavp_steps, s.upsample, s.timechat_stride)  # (B, 40, Dt)
        if s.encoders == "timechat":
            return self.proj(tc)
        if s.fusion == "concat":
            return self.proj(torch.cat([cavp, tc], dim=-1))  # (B, 40, Dc + Dt) -> (B, 40, width)
        d = max(s.cavp_dim, s.timechat_dim)  # add: zero-pad the narrower stream, sum, project
        summed = F.pad(cavp, (0, d - s.cavp_dim)) + F.pad(tc, (0, d - s.timechat_dim))  # (B, 40, d)
        return self.proj(summed)
