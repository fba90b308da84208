"""AudioLDM generation from V2A-Mapper's CLAP embeddings (diffusers' ``AudioLDMPipeline``).

AudioLDM's UNet is conditioned on one L2-normalised CLAP embedding (``class_labels``, a FiLM-like projection
concatenated to the timestep embedding; no cross-attention to text). The pipeline takes it as ``prompt_embeds``
(B, 512) and does *not* normalise supplied embeddings, so we do (as it does for text). With classifier-free
guidance the unconditional embedding is the CLAP text embedding of the empty string, as AudioLDM's own
``get_unconditional_condition`` and the pipeline (``negative_prompt=None``) use; we compute it once per call.

Sampler (``stages.generate.params`` in the V2A-Mapper overlay, configs/v2a-mapper.yaml): DDIM, 200 steps, guidance
2.5, AudioLDM's recommended settings (its paper and diffusers' docs); V2A-Mapper builds on AudioLDM and we could
not read other values in its paper. The pipeline itself (the release through ``from_pretrained``, the ``tiny``
build) is frozen-model code: frozen/audioldm.py.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from frozen.audioldm import DEFAULT_CHECKPOINT, SAMPLE_RATE, build_audioldm_pipeline, clap_width, \
    tiny_audioldm_components  # noqa: F401 (re-exported: the pipeline itself is frozen-model code)
from infer.audioldm2 import initial_noise
from infer.params import GenerationSettings

log = logging.getLogger(__name__)

_DEFAULT = GenerationSettings()  # the defaults of every generation setting (infer/params.py)


@torch.inference_mode()
def unconditional_embedding(pipe) -> torch.Tensor:
    """AudioLDM's unconditional condition: the normalised CLAP text embedding of '' -> (1, D)."""
    tok = pipe.tokenizer
    enc = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    device = pipe._execution_device
    out = pipe.text_encoder(enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device)).text_embeds
    return F.normalize(out, dim=-1)


def generate_from_clap(pipe, embeddings: torch.Tensor | np.ndarray, *, seed: int | Sequence[int],
                       steps: int = _DEFAULT.steps, guidance: float = _DEFAULT.guidance,
                       audio_seconds: float = _DEFAULT.audio_seconds, eta: float = _DEFAULT.eta) -> np.ndarray:
    """One waveform per CLAP embedding (B, D) or (B, 1, D); returns float32 (B, samples) at 16 kHz. ``seed``: one
    per clip, or an int ``s`` meaning ``s + i``; each clip gets its own CPU ``torch.Generator``."""
    emb = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    emb = emb.reshape(emb.shape[0], -1) if emb.ndim == 3 and emb.shape[1] == 1 else emb  # (B, D)
    if emb.ndim != 2 or emb.shape[1] != clap_width(pipe):
        raise ValueError(f"CLAP embeddings have shape {tuple(embeddings.shape)}; this AudioLDM expects (B, "
                         f"{clap_width(pipe)}) or (B, 1, {clap_width(pipe)})")
    if int(steps) < 1 or guidance < 0:
        raise ValueError(f"steps={steps}, guidance={guidance}: need steps >= 1 and guidance >= 0")
    n = emb.shape[0]
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"seed has {len(seeds)} values for {n} clips: give one per clip or a single int")
    dtype, device = pipe.text_encoder.dtype, pipe._execution_device
    cond = {"prompt_embeds": F.normalize(emb.float(), dim=-1).to(device, dtype)}  # (B, D), AudioLDM's condition
    if guidance > 1.0:
        cond["negative_prompt_embeds"] = unconditional_embedding(pipe).expand(n, -1).to(dtype)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    latents = initial_noise(pipe, generators, audio_seconds)  # drawn on the CPU, whatever the device
    audio = pipe(prompt=None, num_inference_steps=int(steps), guidance_scale=guidance,
                 audio_length_in_s=audio_seconds, eta=eta, output_type="np", return_dict=False,
                 generator=generators, latents=latents, **cond)[0]  # (B, samples)
    return np.asarray(audio, dtype=np.float32)
