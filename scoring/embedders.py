"""Frozen audio embedders for the metrics (PANNs, VGGish, PaSST) and the video-audio scorer interface.

Each embedder is built with ``model: full`` (weights from a local checkpoint path, loaded strictly: every missing
or unexpected key is an error, except the documented ignorable ones) or ``model: tiny`` (the same class, small,
random weights from a seed, for tests). Embedders take 16 kHz mono float32 waveforms already cropped to 8 s and
resample to what their network needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from frozen.panns import Cnn14, Cnn14Config
from frozen.passt import SR as PASST_SR, PaSST, PaSSTConfig
from frozen.vggish import VGGish, VGGishConfig, waveform_to_examples
from frozen.weights import load_checkpoint, seeded
from scoring.audio import EVAL_SR, pad_or_crop, remove_dc, resample

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    embedding: np.ndarray  # (N, D) float64; VGGish: (N_examples, D) per clip
    logits: np.ndarray | None = None  # (N, C)


class AudioEmbedder:
    """Base: a frozen network in eval mode under inference_mode, one clip at a time or batched equal lengths."""

    name = "base"

    def __init__(self, net: nn.Module, device: str = "cpu"):
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = device

    @torch.inference_mode()
    def embed(self, wav16k: np.ndarray) -> Embeddings:
        raise NotImplementedError


class PannsEmbedder(AudioEmbedder):
    name = "panns"

    @torch.inference_mode()
    def embed(self, wav16k: np.ndarray) -> Embeddings:
        x = torch.from_numpy(remove_dc(wav16k))[None].to(self.device)  # (1, L)
        out = self.net(x)
        return Embeddings(out["embedding"][0].double().cpu().numpy(), out["logits"][0].double().cpu().numpy())


class VGGishEmbedder(AudioEmbedder):
    name = "vggish"

    @torch.inference_mode()
    def embed(self, wav16k: np.ndarray) -> Embeddings:
        ex = torch.from_numpy(waveform_to_examples(remove_dc(wav16k))).to(self.device)  # (N_ex, 96, 64)
        if ex.shape[0] == 0:
            raise ValueError("VGGish needs at least 0.96 s of audio")
        return Embeddings(self.net(ex).double().cpu().numpy())  # (N_ex, 128)


class PasstEmbedder(AudioEmbedder):
    name = "passt"

    @torch.inference_mode()
    def embed(self, wav16k: np.ndarray) -> Embeddings:
        x = resample(remove_dc(wav16k), EVAL_SR, PASST_SR)
        x = pad_or_crop(x, self.net.cfg.clip_samples)  # full: 320,000 samples = 10 s at 32 kHz
        out = self.net(torch.from_numpy(x)[None].to(self.device))
        return Embeddings(out["embedding"][0].double().cpu().numpy(), out["logits"][0].double().cpu().numpy())


def build_embedders(params: dict, device: str = "cpu") -> dict[str, AudioEmbedder]:
    """``params``: model (full|tiny), seed, panns_ckpt, vggish_ckpt, passt_ckpt (local files for ``full``)."""
    model = params.get("model", "full")
    if model not in ("full", "tiny"):
        raise ValueError(f"evaluate.params.model must be 'full' or 'tiny', got {model!r}")
    if model == "tiny":
        seed = int(params.get("seed", 0))
        return {
            "panns": PannsEmbedder(seeded(lambda: Cnn14(Cnn14Config.tiny()), seed), device),
            "vggish": VGGishEmbedder(seeded(lambda: VGGish(VGGishConfig.tiny()), seed + 1), device),
            "passt": PasstEmbedder(seeded(lambda: PaSST(PaSSTConfig.tiny()), seed + 2), device),
        }
    for key, what in (("panns_ckpt", "Cnn14_16k_mAP=0.438.pth (PANNs, zenodo record 3987831)"),
                      ("vggish_ckpt", "vggish-10086976.pth (torchvggish release)"),
                      ("passt_ckpt", "passt-s-f128-p16-s10-ap.476-swa.pt (PaSST release v0.0.1-audioset)")):
        if not params.get(key):
            raise ValueError(f"evaluate.params.{key} is not set: give the local path of {what}")
    panns, vgg, passt = Cnn14(), VGGish(), PaSST()
    load_checkpoint(panns, params["panns_ckpt"], what="PANNs (evaluate.params.panns_ckpt)", unexpected="raise")
    load_checkpoint(vgg, params["vggish_ckpt"], what="VGGish (evaluate.params.vggish_ckpt)", unexpected="raise",
                    ignore=("pproc.",), ignore_why="torchvggish's PCA post-processing, not applied (av-benchmark)")
    load_checkpoint(passt.net, params["passt_ckpt"], what="PaSST (evaluate.params.passt_ckpt)", unexpected="raise",
                    strip=("module.", "net."))
    return {"panns": PannsEmbedder(panns, device), "vggish": VGGishEmbedder(vgg, device),
            "passt": PasstEmbedder(passt, device)}


class VideoAudioScorer(Protocol):
    """IB-score / DeSync interface: (video path, generated 16 kHz waveform cropped to 8 s) -> one number.

    IB-score: 100 x cosine(ImageBind video embedding, ImageBind audio embedding) (higher is better).
    DeSync: mean |predicted offset| in seconds from Synchformer on the first and last 4.8 s (lower is better).
    """

    def __call__(self, video_path: Path, wav16k: np.ndarray) -> float: ...


def build_video_scorers(params: dict) -> tuple[dict[str, VideoAudioScorer], dict[str, str]]:
    """Return (scorers, skipped reasons): IB-score (frozen/imagebind.py) and DeSync (scoring/desync.py)
    when their checkpoints are set (a local path, or "tiny" for the seeded tiny model); else a skip reason."""
    scorers, reasons = {}, video_scorer_reasons(params)
    if "ib_score" not in reasons:
        from scoring.ib_score import build_ib_scorer  # lazy: only when configured

        scorers["ib_score"] = build_ib_scorer(params)
    if "desync" not in reasons:
        from scoring.desync import build_desync_scorer

        scorers["desync"] = build_desync_scorer(params)
    return scorers, reasons


def video_scorer_reasons(params: dict) -> dict[str, str]:
    """Why each video-audio metric is skipped (absent: it is configured), without building any network."""
    reasons = {}
    for key, ckpt in (("ib_score", "imagebind_ckpt"), ("desync", "synchformer_ckpt")):
        if not params.get(ckpt):
            reasons[key] = f"not configured (evaluate.params.{ckpt} is empty)"
    return reasons
