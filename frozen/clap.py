"""CLAP audio embedding, the V2A-Mapper target: a clip's 16 kHz audio -> one 512-d CLAP audio embedding.

AudioLDM conditions its UNet on a CLAP embedding (audio embedding at training, text embedding at inference: the
two share one space), and V2A-Mapper maps CLIP image embeddings into that space. The CLAP AudioLDM was trained
with is the HTSAT-tiny + RoBERTa model of LAION-CLAP; in transformers that architecture is ``ClapModel`` as
released in ``laion/clap-htsat-unfused`` (diffusers documents AudioLDM's text encoder as that variant). We run its
audio branch (``ClapModel.get_audio_features``): the 16 kHz audio (real length, without the frames stage's zero
padding) is resampled to CLAP's 48 kHz with a polyphase filter (``scipy.signal.resample_poly``, x3, as AudioLDM
resamples 16 -> 48 kHz), turned into 64-bin log-mels by the checkpoint's ``ClapFeatureExtractor`` (10 s,
``repeatpad`` for shorter clips, ``rand_trunc`` for the unfused model, ``fusion`` for a fused one) and embedded.
The embedding is L2-normalised (``normalize``, default true), as AudioLDM normalises its CLAP conditions.
Output per clip: (1, projection_dim), so the trainer sees it as one target token.

    build(params, device) -> CLAPEncoder      # the FrozenEncoder used by the cache stage (pipeline/clap.py)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from frozen import names
from frozen.base import EncoderInfo, freeze

log = logging.getLogger(__name__)

SOURCE_RATE = 16000  # the frames stage's audio
DEFAULT_CHECKPOINT = names.CLAP_DEFAULT_CHECKPOINT  # laion/clap-htsat-unfused


def tiny_model(seed: int = 0):
    """A small seeded ``ClapModel`` whose audio branch takes the real 48 kHz / 64-mel / 10 s features (HTSAT input
    256 x 256 with 16-px patches instead of 4: 256 patches), 16-d projection."""
    from transformers import ClapConfig, ClapModel

    from frozen.weights import seeded

    cfg = ClapConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_hidden_layers=1, max_position_embeddings=80, projection_dim=16),
        audio_config=dict(spec_size=256, window_size=4, num_mel_bins=64, depths=[1, 1], num_attention_heads=[1, 1],
                          hidden_size=16, patch_embeds_hidden_size=8, patch_size=16, patch_stride=16,
                          num_hidden_layers=1, intermediate_size=16, projection_dim=16),
        projection_dim=16)
    return seeded(lambda: ClapModel(cfg), seed, perturb=0.02)  # non-trivial norms and biases


def _local_or_hub(ref: str) -> str:
    p = Path(ref).expanduser()
    return str(p) if p.exists() else ref


def load_model(checkpoint: str):
    """(ClapModel, ClapFeatureExtractor) with ``from_pretrained`` on a local folder or a hub id."""
    from transformers import ClapFeatureExtractor, ClapModel

    ref = _local_or_hub(checkpoint)
    try:
        return ClapModel.from_pretrained(ref), ClapFeatureExtractor.from_pretrained(ref)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"clap params: checkpoint {checkpoint!r} is neither a save_pretrained folder (model "
                                f"and preprocessor config) nor a reachable hub id of a CLAP model: {err}") from err


def resample_to(audio: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz float32 (n,) -> ``rate`` Hz (polyphase FIR, scipy's default Kaiser window)."""
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SOURCE_RATE)
    return resample_poly(audio, rate // g, SOURCE_RATE // g).astype(np.float32)


class CLAPEncoder:
    """FrozenEncoder: 16 kHz audio (B, 160000) -> (B, 1, projection_dim) float32 on CPU."""

    def __init__(self, model, extractor, info: EncoderInfo, *, device: str, normalize: bool):
        self.model, self.extractor, self.info = model, extractor, info
        self.device, self.normalize = torch.device(device), normalize
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"

    def features(self, batch: torch.Tensor, lengths: torch.Tensor) -> dict:
        """The extractor's inputs (``input_features`` (B, 1 or 4, T, 64), ``is_longer``) for the real audio."""
        if batch.ndim != 2 or lengths.shape != (batch.shape[0],):
            raise ValueError(f"clap.encode: batch must be (B, samples) with lengths (B,), got {tuple(batch.shape)} "
                             f"and {tuple(lengths.shape)}")
        if bool((lengths < 1).any()):
            raise ValueError(f"clap.encode: every clip needs audio (lengths >= 1), got {lengths.tolist()}")
        sr = int(self.extractor.sampling_rate)
        waves = [resample_to(batch[i, : int(n)].float().numpy(), sr) for i, n in enumerate(lengths)]
        return self.extractor(waves, sampling_rate=sr, return_tensors="pt", truncation=self.truncation)

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.features(batch, lengths)
        with torch.inference_mode():
            out = self.model.get_audio_features(input_features=feats["input_features"].to(self.device),
                                                is_longer=feats["is_longer"].to(self.device))
            emb = getattr(out, "pooler_output", out).float()  # (B, projection_dim)
        emb = F.normalize(emb, dim=-1) if self.normalize else emb
        return emb.cpu()[:, None]  # (B, 1, projection_dim)


def build(params: dict, device: str = "cpu") -> CLAPEncoder:
    """params: ``model`` full|tiny; ``checkpoint`` (hub id or folder) for full; ``seed`` for tiny; ``normalize``."""
    from transformers import ClapFeatureExtractor

    kind = params.get("model", "full")
    if params.get("half"):
        raise ValueError("clap params: half is not supported (the CLAP target is computed in float32)")
    if kind == "tiny":
        seed = int(params.get("seed", 0))
        model, extractor, identity = tiny_model(seed), ClapFeatureExtractor(), {"tiny_seed": seed}
    elif kind == "full":
        ckpt = str(params.get("checkpoint") or DEFAULT_CHECKPOINT)
        (model, extractor), identity = load_model(ckpt), {"source": ckpt}
    else:
        raise ValueError(f"clap params: model must be 'full' or 'tiny', got {kind!r}")
    model = freeze(model).to(device)
    dim = int(model.config.projection_dim)
    normalize = bool(params.get("normalize", True))
    a = model.config.audio_config
    info = EncoderInfo(name="clap", input_kind="audio", output_shape=(1, dim),
                       config={"class": type(model).__name__, "branch": "audio", "projection_dim": dim,
                               "enable_fusion": bool(a.enable_fusion), "spec_size": a.spec_size,
                               "sampling_rate": int(extractor.sampling_rate), "normalize": normalize},
                       checkpoint=identity)
    log.info("clap: built %s model (D=%d) on %s", kind, dim, device)
    return CLAPEncoder(model, extractor, info, device=device, normalize=normalize)
