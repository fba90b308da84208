"""Frame resizing as av-benchmark's video loader does it (``av_bench/data/video_dataset.py``).

av-benchmark decodes frames to uint8 with torio's ``StreamingMediaDecoder`` and applies torchvision's
``v2.Resize(224, interpolation=BICUBIC)`` (antialias on) to the uint8 tensor in its DataLoader workers, on the CPU.
There torchvision hands uint8 straight to ``torch.nn.functional.interpolate`` (its native uint8 bicubic kernel:
separable passes in fixed point, each rounded and clamped to 0..255), which differs from resizing float frames and
rounding afterwards by a few grey levels on real frames (up to ~20 on noise). The output size follows torchvision:
the shorter side becomes ``size`` and the longer ``int(size * long / short)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision's output (height, width) for ``Resize(size)`` (an int: the shorter side)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    return (new_long, size) if w <= h else (size, new_long)


def resize_short_side_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(T, C, H, W) uint8 -> (T, C, H', W') uint8, shorter side ``size`` (bicubic, antialiased, torchvision on
    the CPU). Frames already at that size are returned unchanged, as torchvision does."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"frames must be (T, C, H, W) uint8, got {tuple(x.shape)} {x.dtype}")
    nh, nw = resized_size(x.shape[-2], x.shape[-1], size)
    if (nh, nw) == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x.cpu().contiguous(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
