"""AudioLDM-2 (``cvssp/audioldm2``) components at their released sizes with seeded random weights, built offline
from the configs below (``model: random-full``, used by ``benchmarks/smoke_full.py`` to prove that the real
dimensions connect without downloading anything).

Sizes, from the original AudioLDM-2 ``audioldm2-full`` config as diffusers' conversion script
(scripts/convert_original_audioldm2_to_diffusers.py) maps it: UNet model_channels 128 x (1, 2, 3, 5), attention at
downsampling 2/4/8, 2 res blocks, 8 latent channels, cross-attention streams GPT-2 768 + FLAN-T5 1024 after an extra
self-attention layer; VAE ch 128 x (1, 2, 4), 8 latent channels, 64 mel bins in; HiFi-GAN 16 kHz (hop 160 =
5*4*2*2*2, 1024 initial channels); FLAN-T5-large encoder (d_model 1024, 24 layers, 16 heads, d_ff 2816, gated GELU);
GPT-2 768 x 12; CLAP (transformers' default ClapConfig: RoBERTa-base text tower, HTSAT audio tower, 512-d
projection); projection model 512 / 1024 -> 768. Tokenizers are the offline tiny ones (their ids fit the full
vocabularies). The learnt VAE scaling factor of the release is not known here; 0.18215 stands in (scale only).
"""

from __future__ import annotations

import torch

UNET = dict(
    sample_size=256, in_channels=8, out_channels=8, layers_per_block=2,
    block_out_channels=(128, 256, 384, 640),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=([None, 768, 1024],) * 4,  # None: the extra self-attention layer
    attention_head_dim=8,
)
VAE = dict(
    in_channels=1, out_channels=1, latent_channels=8, layers_per_block=2, block_out_channels=(128, 256, 512),
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=1024,
    scaling_factor=0.18215,
)
VOCODER = dict(
    model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
    upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], normalize_before=False,
)
T5 = dict(d_model=1024, d_ff=2816, d_kv=64, num_layers=24, num_heads=16, vocab_size=32128,
          feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, is_gated_act=True)
GPT2 = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257, max_new_tokens=8)
PROJECTION = dict(text_encoder_dim=512, text_encoder_1_dim=1024, langauge_model_dim=768)


def random_full_components(params: dict) -> dict:
    """Every component of ``cvssp/audioldm2`` at its released size, seeded random, no file or network access."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model, SpeechT5HifiGan,
                              SpeechT5HifiGanConfig, T5Config, T5EncoderModel)

    from infer.audioldm2 import tiny_tokenizers

    seed = int(params.get("seed", 0))
    tokenizer, tokenizer_2 = tiny_tokenizers()
    parts = {}
    builders = {
        "unet": lambda: AudioLDM2UNet2DConditionModel(**UNET),
        "vae": lambda: AutoencoderKL(**VAE),
        "text_encoder": lambda: ClapModel(ClapConfig()),
        "text_encoder_2": lambda: T5EncoderModel(T5Config(**T5, pad_token_id=tokenizer_2.pad_token_id,
                                                           eos_token_id=tokenizer_2.eos_token_id)),
        "language_model": lambda: GPT2Model(GPT2Config(**GPT2)),
        "projection_model": lambda: AudioLDM2ProjectionModel(**PROJECTION),
        "vocoder": lambda: SpeechT5HifiGan(SpeechT5HifiGanConfig(**VOCODER)),
    }
    for i, (name, build) in enumerate(builders.items()):
        torch.manual_seed(seed + i)
        parts[name] = build()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler,
                feature_extractor=ClapFeatureExtractor())


def full_components(seed: int = 0) -> dict:
    """:func:`random_full_components` for ``seed`` (benchmarks/gpu_check.py)."""
    return random_full_components({"seed": seed})
