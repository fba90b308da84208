"""AudioLDM-2 (``cvssp/audioldm2``, the base model) at its released sizes with random weights: no download.

For speed and memory checks (benchmarks/gpu_check.py) before any weight is at hand. The sizes are those of the
original AudioLDM-2 configuration that diffusers' conversion script (scripts/convert_original_audioldm2_to_
diffusers.py, ``DEFAULT_CONFIG``) turns into ``cvssp/audioldm2``: UNet model_channels 128, channel_mult
(1, 2, 3, 5), 2 res blocks, attention at 2x/4x/8x down, 32 channels per head, two cross-attention streams
(GPT-2 768, FLAN-T5 1024) after a self-attention layer, 8 latent channels; VAE ch 128, ch_mult (1, 2, 4), 8 latent
channels; HiFi-GAN 64 mels, upsample (5, 4, 2, 2, 2), initial channel 1024; the text encoders are CLAP
(laion/clap-htsat-unfused: RoBERTa-base text tower, projection 512) and FLAN-T5-large's encoder; GPT-2 base.
The tokenizers are the tiny offline ones (their ids lie inside the real vocabularies), which changes nothing in
the timed path: generation is called with every embedding supplied.
"""

from __future__ import annotations

import torch

T5_LARGE = dict(vocab_size=32128, d_model=1024, d_ff=2816, d_kv=64, num_layers=24, num_heads=16,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
UNET_CHANNELS = (128, 256, 384, 640)  # model_channels 128 x channel_mult (1, 2, 3, 5)


def full_components(seed: int = 0) -> dict:
    """Every component of ``AudioLDM2Pipeline`` at the released sizes, seeded random weights (float32, CPU)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (
        ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model, SpeechT5HifiGan, SpeechT5HifiGanConfig,
        T5Config, T5EncoderModel,
    )

    from infer.audioldm2 import tiny_tokenizers

    tokenizer, tokenizer_2 = tiny_tokenizers()
    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=256, in_channels=8, out_channels=8, block_out_channels=UNET_CHANNELS, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=tuple(c // 32 for c in UNET_CHANNELS),  # heads per block (32 channels each)
        cross_attention_dim=tuple([None, 768, 1024] for _ in UNET_CHANNELS),
    )
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=256,
        scaling_factor=0.4110838,
    )
    clap = ClapModel(ClapConfig(projection_dim=512))  # laion/clap-htsat-unfused sizes are ClapConfig's defaults
    t5 = T5EncoderModel(T5Config(**T5_LARGE))
    gpt2 = GPT2Model(GPT2Config(n_embd=768, n_layer=12, n_head=12, max_new_tokens=8))
    projection = AudioLDM2ProjectionModel(text_encoder_dim=512, text_encoder_1_dim=1024, langauge_model_dim=768)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16_000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False,
    ))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection, language_model=gpt2,
                tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(),
                unet=unet, scheduler=scheduler, vocoder=vocoder)
