"""AudioLDM generation from V2A-Mapper's CLAP embeddings (diffusers' ``AudioLDMPipeline``).

AudioLDM's UNet is conditioned on one L2-normalised CLAP embedding (``class_labels``, a FiLM-like projection
concatenated to the timestep embedding; no cross-attention to text). The pipeline takes it as ``prompt_embeds``
(B, 512) and does *not* normalise supplied embeddings, so we do (as it does for text). With classifier-free
guidance the unconditional embedding is the CLAP text embedding of the empty string, as AudioLDM's own
``get_unconditional_condition`` and the pipeline (``negative_prompt=None``) use; we compute it once per call.

Sampler (``stages.generate.params`` in the V2A-Mapper overlay): DDIM, 200 steps, guidance 2.5, AudioLDM's
recommended settings (its paper and diffusers' docs); V2A-Mapper builds on AudioLDM and we could not read other
values in its paper. The released pipeline loads with ``from_pretrained`` (a hub id such as
``cvssp/audioldm-s-full-v2`` or a local ``save_pretrained`` folder); ``tiny`` builds seeded components of the same
classes offline, shaped like diffusers' own AudioLDM tests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_CHECKPOINT = "cvssp/audioldm-s-full-v2"


def build_audioldm_pipeline(params: dict, device: str | torch.device = "cpu"):
    """An ``AudioLDMPipeline`` with a DDIM scheduler, eval mode, on ``device``. ``params['model']``: ``full``
    loads ``params['checkpoint']`` with ``from_pretrained`` (float16 on CUDA when ``half``); ``tiny`` builds small
    seeded components (``seed``, ``clap_dim``)."""
    from diffusers import AudioLDMPipeline, DDIMScheduler

    device = torch.device(device)
    model = params.get("model", "full")
    if model == "full":
        ckpt = str(params.get("checkpoint") or DEFAULT_CHECKPOINT)
        ref = str(Path(ckpt).expanduser()) if Path(ckpt).expanduser().exists() else ckpt
        half = bool(params.get("half", False)) and device.type == "cuda"
        try:
            pipe = AudioLDMPipeline.from_pretrained(ref, dtype=torch.float16 if half else torch.float32)
        except (OSError, ValueError, TypeError) as err:
            raise RuntimeError(f"generate params: checkpoint {ckpt!r} is not an AudioLDM pipeline (a hub id such as "
                               f"{DEFAULT_CHECKPOINT} or a save_pretrained folder): {err}") from err
    elif model == "tiny":
        pipe = AudioLDMPipeline(**tiny_audioldm_components(params))
    else:
        raise ValueError(f"generate param model={model!r} is not supported: use 'full' or 'tiny'")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    for name in ("vae", "text_encoder", "unet", "vocoder"):
        getattr(pipe, name).eval()
    return pipe


def tiny_audioldm_components(params: dict) -> dict:
    """Seeded components of every class the released AudioLDM pipelines use; no file or network access. CLAP width
    ``clap_dim`` (default 16) = the UNet's class-embedding input = the V2A-Mapper's target width; UNet cross-attention
    widths equal its channels (AudioLDM has no text cross-attention); vocoder hop 160 samples (10 ms at 16 kHz) over
    8 mel bins, VAE factor 2."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from infer.audioldm2 import tiny_tokenizers

    seed, clap_dim = int(params.get("seed", 0)), int(params.get("clap_dim", 16))
    tokenizer = tiny_tokenizers()[0]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=32, in_channels=4,
        out_channels=4, attention_head_dim=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16),
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=clap_dim,
        class_embeddings_concat=True)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4,
                        norm_num_groups=8, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2)
    torch.manual_seed(seed + 2)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, projection_dim=clap_dim))
    torch.manual_seed(seed + 3)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=SAMPLE_RATE, upsample_initial_channel=16, upsample_rates=[8, 20],
        upsample_kernel_sizes=[16, 40], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                vocoder=vocoder)


def clap_width(pipe) -> int:
    """The CLAP width the UNet's class embedding takes (512 for the released models)."""
    return int(pipe.unet.config.projection_class_embeddings_input_dim)


@torch.inference_mode()
def unconditional_embedding(pipe) -> torch.Tensor:
    """AudioLDM's unconditional condition: the normalised CLAP text embedding of '' -> (1, D)."""
    tok = pipe.tokenizer
    enc = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    device = pipe._execution_device
    out = pipe.text_encoder(enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device)).text_embeds
    return F.normalize(out, dim=-1)


def generate_from_clap(pipe, embeddings: torch.Tensor | np.ndarray, *, seed: int | Sequence[int], steps: int = 200,
                       guidance: float = 2.5, audio_seconds: float = 10.24, eta: float = 0.0) -> np.ndarray:
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
    audio = pipe(prompt=None, num_inference_steps=int(steps), guidance_scale=guidance,
                 audio_length_in_s=audio_seconds, eta=eta, output_type="np", return_dict=False,
                 generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], **cond)[0]  # (B, samples)
    return np.asarray(audio, dtype=np.float32)
