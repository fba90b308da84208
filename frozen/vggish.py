"""VGGish (128-d per 0.96 s) written for this project, with the parameter names of the torchvggish checkpoint.

``vggish-10086976.pth`` (torchvggish) loads key for key: ``features.{0,3,6,8,11,13}`` (Conv2d 3x3) and
``embeddings.{0,2,4}`` (Linear). As in av-benchmark the last ReLU is dropped and no PCA post-processing is applied.
The PyPI ``torchvggish`` keeps that ReLU, downloads its weights from a URL and imports resampy (numba) at import
time, so it is not used here.

Front end (the TF VGGish recipe, numpy): 16 kHz, 25 ms periodic-hann frames, 10 ms hop, |rfft 512|, 64 HTK mel
bands 125-7500 Hz, log(mel + 0.01), non-overlapping 96-frame examples -> (N_examples, 1, 96, 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from frozen.audio import VGGISH_EXAMPLE_FRAMES as EXAMPLE_FRAMES, vggish_examples, vggish_mel_matrix

__all__ = ["EXAMPLE_FRAMES", "SR", "VGGish", "VGGishConfig", "vggish_mel_matrix", "waveform_to_examples"]

SR = 16000


@dataclass
class VGGishConfig:
    widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512)  # convs; pools after the 1st, 2nd, 4th, 6th
    hidden: int = 4096
    embed_dim: int = 128

    @classmethod
    def tiny(cls) -> "VGGishConfig":
        return cls(widths=(4, 4, 8, 8, 8, 8), hidden=16, embed_dim=8)


def waveform_to_examples(x: np.ndarray) -> np.ndarray:
    """16 kHz mono (L,) -> log-mel examples (N, 96, 64) float32 (frozen/audio.py ``vggish_examples``)."""
    return vggish_examples(x)


class VGGish(nn.Module):
    def __init__(self, cfg: VGGishConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VGGishConfig()
        layers: list[nn.Module] = []
        c_in = 1
        for i, w in enumerate(cfg.widths):
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(inplace=True)]
            if i in (0, 1, 3, 5):
                layers.append(nn.MaxPool2d(2, 2))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(c_in * 4 * 6, cfg.hidden), nn.ReLU(True),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(True),
            nn.Linear(cfg.hidden, cfg.embed_dim))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """examples (N, 96, 64) log-mel -> (N, embed_dim)."""
        x = self.features(examples[:, None])  # (N, C, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (N, 6*4*C), TF channel-last order
        return self.embeddings(x)
