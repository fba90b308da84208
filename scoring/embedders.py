"""Frozen audio embedders for the metrics (PANNs, VGGish, PaSST) and the video-audio scorer interface.

Each embedder is built with ``model: full`` (weights from a local checkpoint path, loaded strictly: every missing
or unexpected key is an error, except the documented ignorable ones) or ``model: tiny`` (the same class, small,
random weights from a seed, for tests). Embedders take a clip's audio as read from its file (:class:`ClipAudio`,
or a 16 kHz mono array) and prepare their network's input as av-benchmark does (scoring/audio.py): mono mean,
whole-file DC removal, torchaudio's ``Resample`` to 16 kHz (PANNs, VGGish) or 32 kHz (PaSST), the first
``seconds`` (8 s); PaSST's 8 s at 32 kHz are zero-padded to its 10 s.
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
from scoring.audio import EVAL_SR, ClipAudio, pad_or_crop
from scoring.params import EvalParams

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    embedding: np.ndarray  # (N, D) float64; VGGish: (N_examples, D) per clip
    logits: np.ndarray | None = None  # (N, C)


class AudioEmbedder:
    """Base: a frozen network in eval mode under inference_mode, one clip at a time or batched equal lengths."""

    name = "base"

    def __init__(self, net: nn.Module, device: str = "cpu", seconds: float = 8.0):
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = device
        self.seconds = seconds

    def prepare(self, audio) -> np.ndarray:
        """The network's waveform input, as av-benchmark's ``AudioDataset`` gives it (16 kHz, first 8 s)."""
        return ClipAudio.from_source(audio).av_input(EVAL_SR, self.seconds)

    @torch.inference_mode()
    def embed(self, audio) -> Embeddings:
        raise NotImplementedError


class PannsEmbedder(AudioEmbedder):
    name = "panns"

    @torch.inference_mode()
    def embed(self, audio) -> Embeddings:
        x = torch.from_numpy(self.prepare(audio))[None].to(self.device)  # (1, L)
        out = self.net(x)
        return Embeddings(out["embedding"][0].double().cpu().numpy(), out["logits"][0].double().cpu().numpy())


class VGGishEmbedder(AudioEmbedder):
    name = "vggish"

    @torch.inference_mode()
    def embed(self, audio) -> Embeddings:
        ex = torch.from_numpy(waveform_to_examples(self.prepare(audio))).to(self.device)  # (N_ex, 96, 64)
        if ex.shape[0] == 0:
            raise ValueError("VGGish needs at least 0.96 s of audio")
        return Embeddings(self.net(ex).double().cpu().numpy())  # (N_ex, 128)


class PasstEmbedder(AudioEmbedder):
    name = "passt"

    def prepare(self, audio) -> np.ndarray:
        """av-benchmark reads the file again at 32 kHz (first 8 s), then pads to PaSST's 10 s (320,000 samples)."""
        x = ClipAudio.from_source(audio).av_input(PASST_SR, self.seconds)
        return pad_or_crop(x, self.net.cfg.clip_samples)

    @torch.inference_mode()
    def embed(self, audio) -> Embeddings:
        x = self.prepare(audio)
        out = self.net(torch.from_numpy(x)[None].to(self.device))
        return Embeddings(out["embedding"][0].double().cpu().numpy(), out["logits"][0].double().cpu().numpy())


def build_embedders(p: EvalParams, device: str = "cpu") -> dict[str, AudioEmbedder]:
    """From ``p.model`` (full | tiny | random-full), ``p.seed``, ``p.seconds`` and, for ``full``, the local files
    ``p.panns_ckpt``, ``p.vggish_ckpt``, ``p.passt_ckpt``."""
    model, sec, seed = p.model, float(p.seconds), int(p.seed)
    if model not in ("full", "tiny", "random-full"):
        raise ValueError(f"evaluate.params.model must be 'full' or 'tiny' (or 'random-full': the released sizes, "
                         f"random weights), got {model!r}")
    if model == "random-full":  # the released sizes, seeded random weights (benchmarks/smoke_full.py)
        return {"panns": PannsEmbedder(seeded(Cnn14, seed), device, sec),
                "vggish": VGGishEmbedder(seeded(VGGish, seed + 1), device, sec),
                "passt": PasstEmbedder(seeded(PaSST, seed + 2), device, sec)}
    if model == "tiny":
        return {
            "panns": PannsEmbedder(seeded(lambda: Cnn14(Cnn14Config.tiny()), seed), device, sec),
            "vggish": VGGishEmbedder(seeded(lambda: VGGish(VGGishConfig.tiny()), seed + 1), device, sec),
            "passt": PasstEmbedder(seeded(lambda: PaSST(PaSSTConfig.tiny()), seed + 2), device, sec),
        }
    for key, what in (("panns_ckpt", "Cnn14_16k_mAP=0.438.pth (PANNs, zenodo record 3987831)"),
                      ("vggish_ckpt", "vggish-10086976.pth (torchvggish release)"),
                      ("passt_ckpt", "passt-s-f128-p16-s10-ap.476-swa.pt (PaSST release v0.0.1-audioset)")):
        if not getattr(p, key):
            raise ValueError(f"evaluate.params.{key} is not set: give the local path of {what}")
    panns, vgg, passt = Cnn14(), VGGish(), PaSST()
    load_checkpoint(panns, p.panns_ckpt, what="PANNs (evaluate.params.panns_ckpt)", unexpected="raise")
    load_checkpoint(vgg, p.vggish_ckpt, what="VGGish (evaluate.params.vggish_ckpt)", unexpected="raise",
                    ignore=("pproc.",), ignore_why="torchvggish's PCA post-processing, not applied (av-benchmark)")
    load_checkpoint(passt.net, p.passt_ckpt, what="PaSST (evaluate.params.passt_ckpt)", unexpected="raise",
                    strip=("module.", "net."))
    return {"panns": PannsEmbedder(panns, device, sec), "vggish": VGGishEmbedder(vgg, device, sec),
            "passt": PasstEmbedder(passt, device, sec)}


class VideoAudioScorer(Protocol):
    """IB-score / DeSync interface: (video path, the generated clip's audio) -> one number. The audio is a
    :class:`ClipAudio` (the whole file) or a 16 kHz mono array; each scorer prepares it as av-benchmark does.

    IB-score: 100 x cosine(ImageBind video embedding, ImageBind audio embedding) (higher is better).
    DeSync: mean |predicted offset| in seconds from Synchformer on the first and last 4.8 s (lower is better).
    """

    def __call__(self, video_path: Path, audio) -> float: ...


def build_video_scorers(p: EvalParams) -> tuple[dict[str, VideoAudioScorer], dict[str, str]]:
    """Return (scorers, skipped reasons): IB-score (frozen/imagebind.py) and DeSync (scoring/desync.py)
    when their checkpoints are set (a local path, or "tiny" for the seeded tiny model); else a skip reason."""
    scorers, reasons = {}, video_scorer_reasons(p)
    if "ib_score" not in reasons:
        from scoring.ib_score import build_ib_scorer  # lazy: only when configured

        scorers["ib_score"] = build_ib_scorer(p)
    if "desync" not in reasons:
        from scoring.desync import build_desync_scorer

        scorers["desync"] = build_desync_scorer(p)
    return scorers, reasons


def video_scorer_reasons(p: EvalParams) -> dict[str, str]:
    """Why each video-audio metric is skipped (absent: it is configured), without building any network."""
    reasons = {}
    for key, ckpt in (("ib_score", "imagebind_ckpt"), ("desync", "synchformer_ckpt")):
        if not getattr(p, ckpt):
            reasons[key] = f"not configured (evaluate.params.{ckpt} is empty)"
    return reasons
