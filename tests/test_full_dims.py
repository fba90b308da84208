"""The full-size models connect: each built at its released size on the meta device (no memory, no weights) and run
forward there, so shapes propagate without arithmetic. `make smoke-full` does the same with real numbers on CPU."""

from __future__ import annotations

import torch

from trainer.config import MapperSpec
from frozen.gpt2 import GPT2_KEYS
from trainer.mapper import Mapper


def test_encoders_give_the_cached_shapes():
    from frozen.audiomae import AudioMAEConfig, AudioMAEViT
    from frozen.cavp import CAVPConfig, CAVPVideoEncoder

    with torch.device("meta"):
        cavp = CAVPVideoEncoder(CAVPConfig.full())
        assert cavp(torch.empty(2, 40, 3, 224, 224)).shape == (2, 40, 512)
        mae = AudioMAEViT(AudioMAEConfig.full())
        assert mae(torch.empty(2, 1, 1024, 128)).shape == (2, 8, 768)


def full_mapper() -> Mapper:
    from transformers import GPT2Config

    g = GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024)  # AudioLDM-2's language_model
    spec = MapperSpec(encoders="both", fusion="concat", tc_pool="mean", upsample="nearest", cavp_steps=40,
                      cavp_dim=512, timechat_windows=10, timechat_queries=32, timechat_dim=768, n_tokens=8,
                      timechat_stride=4, target_dim=768, sos_eos=False, target_proj=False,
                      gpt2_config={k: getattr(g, k) for k in GPT2_KEYS if hasattr(g, k)})
    return Mapper(spec)


def test_mapper_maps_cavp_512_and_timechat_768_to_8x768():
    with torch.device("meta"):
        m = full_mapper()
        cavp, tc = torch.empty(2, 40, 512), torch.empty(2, 10, 32, 768)
        assert m(cavp, tc, torch.empty(2, 8, 768)).shape == (2, 8, 768)
    assert sum(p.numel() for p in m.gpt2.parameters()) > 120e6  # GPT-2 base with its unused token table


def test_audioldm2_unet_vae_vocoder_at_released_sizes():
    """The UNet takes the mapper's 8 x 768 tokens on one stream and FLAN-T5's 1024-d states on the other; the VAE
    decodes its latent to a 1024 x 64 mel, the vocoder that to 10.24 s at 16 kHz."""
    from diffusers import AutoencoderKL
    from diffusers.pipelines.audioldm2 import AudioLDM2UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel

    from frozen.audioldm2 import T5, UNET, VAE, VOCODER

    with torch.device("meta"):
        unet = AudioLDM2UNet2DConditionModel(**UNET)
        t5 = T5EncoderModel(T5Config(**T5))
        text = t5(input_ids=torch.zeros(2, 12, dtype=torch.long)).last_hidden_state  # (2, 12, 1024)
        assert text.shape == (2, 12, 1024)
        latent = torch.empty(2, 8, 256, 16)  # 10.24 s: 1024 mel frames / 4, 64 mel bins / 4
        out = unet(latent, torch.tensor([10, 10]), encoder_hidden_states=torch.empty(2, 8, 768),
                   encoder_hidden_states_1=text, encoder_attention_mask_1=torch.ones(2, 12, dtype=torch.long))
        assert out.sample.shape == latent.shape
        mel = AutoencoderKL(**VAE).decode(latent[:1]).sample  # (1, 1, 1024, 64)
        assert mel.shape == (1, 1, 1024, 64)
        wav = SpeechT5HifiGan(SpeechT5HifiGanConfig(**VOCODER))(mel[:, 0])
        assert wav.shape[-1] >= 163_840  # hop 160: 1024 frames -> 10.24 s (+ conv edge samples, cropped later)
    n_unet = sum(p.numel() for p in unet.parameters())
    assert 3.0e8 < n_unet < 4.0e8, n_unet  # AudioLDM-2 base UNet: ~350M
