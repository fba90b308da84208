"""The contract every frozen encoder fulfils, so that one cache stage can run any of them.

An encoder module (``frozen/cavp.py``, ``frozen/timechat.py``, ``frozen/audiomae.py``) exposes

    build(params: dict, device: str = "cpu") -> FrozenEncoder

where ``params`` is the stage's ``params`` mapping from ``stages.yaml`` (``model: full|tiny``, checkpoint
paths or hub ids, seeds, sizes, ``half: bool``...).  The returned object is in eval mode with
``requires_grad`` off and runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


@dataclass
class EncoderInfo:
    """What the cache records about an encoder (zarr attributes)."""

    name: str  # "cavp" | "timechat" | "audiomae"
    input_kind: str  # "frames" | "audio"
    output_shape: tuple[int, ...]  # per clip, e.g. (40, 512)
    config: dict = field(default_factory=dict)  # the module config actually built (sizes)
    checkpoint: dict = field(default_factory=dict)  # identity of the weights: files (path/size/mtime), hub ids, or tiny seed


class FrozenEncoder(Protocol):
    info: EncoderInfo

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode one batch.

        frames encoders: ``batch`` (B, 40, 224, 224, 3) uint8 RGB, ``lengths`` (B,) real frame counts.
        audio encoders:  ``batch`` (B, 160000) float32 16 kHz mono, ``lengths`` (B,) real sample counts.
        Returns (B, *info.output_shape) float32 on CPU.
        """
        ...


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: the encoders are never trained here."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def build_options(name: str, params: dict, device: str) -> tuple[str, bool]:
    """The params every encoder takes, validated: ``model`` (``full`` | ``tiny`` | ``random-full``) and ``half``
    (CUDA only)."""
    kind = params.get("model", "full")
    half = bool(params.get("half", False))
    if half and not str(device).startswith("cuda"):
        raise ValueError(f"{name} params: half=True needs a CUDA device, got device {device!r}; set half: false")
    if kind not in ("full", "tiny", "random-full"):  # random-full: released size, random weights (smoke_full.py)
        raise ValueError(f"{name} params: model must be 'full' or 'tiny' (or 'random-full': the released size, "
                         f"random weights), got {kind!r}")
    return kind, half


def positive_int(name: str, params: dict, key: str, default: int) -> int:
    value = int(params.get(key, default))
    if value < 1:
        raise ValueError(f"{name} params: {key} must be >= 1, got {value}")
    return value


def empty_on_cpu(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build on the meta device (no random init of weights that a checkpoint replaces), then allocate on CPU."""
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")
