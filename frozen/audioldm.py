"""AudioLDM (``cvssp/audioldm-s-full-v2``, V2A-Mapper's generator) as a frozen model: diffusers' ``AudioLDMPipeline``
loaded from the release (hub id or a ``save_pretrained`` folder) or built ``tiny`` (small, seeded, offline: tests and
the demo), its scheduler, and the CLAP width its UNet is conditioned on. Generation from V2A-Mapper's CLAP
embeddings is infer/audioldm.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from frozen.audioldm2 import SAMPLE_RATE, set_scheduler, tiny_tokenizers

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "cvssp/audioldm-s-full-v2"


class _NoDeprecationNotice(logging.Filter):
    """Drops diffusers' "The AudioLDMPipeline has been deprecated and will not receive bug fixes ..." line, logged at
    every construction: AudioLDM is V2A-Mapper's generator as its paper used it, and diffusers 0.42.1 (pinned)
    still ships and runs it. Only that message of that class is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("AudioLDMPipeline" in msg and "has been deprecated" in msg)


def _silence_deprecation_notice() -> None:
    notices = logging.getLogger("diffusers.pipelines.pipeline_utils")
    if not any(isinstance(f, _NoDeprecationNotice) for f in notices.filters):
        notices.addFilter(_NoDeprecationNotice())


def build_audioldm_pipeline(params: dict, device: str | torch.device = "cpu"):
    """An ``AudioLDMPipeline`` with a DDIM scheduler (or ``params['scheduler']``), eval mode, on ``device``.
    ``params['model']``: ``full`` loads ``params['checkpoint']`` with ``from_pretrained`` (float16 on CUDA when
    ``half``); ``tiny`` builds small seeded components (``seed``, ``clap_dim``)."""
    from diffusers import AudioLDMPipeline

    _silence_deprecation_notice()
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
        raise ValueError(f"generate param model={model!r} is not supported for AudioLDM: use 'full' or 'tiny'")
    set_scheduler(pipe, params.get("scheduler", "ddim"))
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
