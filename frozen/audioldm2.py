"""AudioLDM-2 (``cvssp/audioldm2``) as a frozen model: the diffusers pipeline loaded from the release (hub id or a
``save_pretrained`` folder), built ``tiny`` (small, seeded, offline: tests and the demo) or ``random-full`` (the
released sizes with seeded random weights: frozen/audioldm2.py), its scheduler, the width of its generated
(AudioMAE) stream, and the preflight of a folder. Generation from the mapper's tokens is infer/audioldm2.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from frozen.gpt2 import AUDIOLDM2_GPT2
from frozen.names import SCHEDULERS

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_TOKENS = 8  # the generated (AudioMAE) stream: 8 pooled tokens

# words of the tiny tokenizers' vocabulary (anything else maps to <unk>); enough for the demo labels
_TINY_WORDS = (
    "low quality average high dog bow-wow barking cat meowing car engine running bird chirping water flowing "
    "people talking music playing rain wind train horn siren baby crying a the of and sound"
).split()


# ----------------------------------------------------------------------------------------------------------------
# Building the pipeline
# ----------------------------------------------------------------------------------------------------------------
def build_pipeline(params: dict, device: str | torch.device = "cpu"):
    """Return an ``AudioLDM2Pipeline`` with a DDIM scheduler, in eval mode, on ``device``.

    ``params['model']``: ``full`` loads ``params['checkpoint']`` (hub id such as ``cvssp/audioldm2`` or a local
    folder written by ``save_pretrained``) with ``from_pretrained`` (float16 on CUDA when ``half``); ``tiny`` builds
    small seeded components offline (``seed``, ``gpt_dim``, ``t5_dim``).
    """
    from diffusers import AudioLDM2Pipeline

    model = params.get("model", "full")
    device = torch.device(device)
    if model == "full":
        checkpoint = params.get("checkpoint", "cvssp/audioldm2")
        half = bool(params.get("half", False)) and device.type == "cuda"
        if params.get("half") and not half:
            log.warning("half=true ignored on %s: float16 is used on CUDA only", device)
        pipe = AudioLDM2Pipeline.from_pretrained(checkpoint, dtype=torch.float16 if half else torch.float32)
    elif model == "tiny":
        pipe = AudioLDM2Pipeline(**tiny_components(params))
    elif model == "random-full":  # released sizes, random weights (benchmarks/smoke_full.py)
        pipe = AudioLDM2Pipeline(**random_full_components(params))
    else:
        raise ValueError(f"generate param model={model!r} is not supported: use 'full', 'tiny' or 'random-full'")
    set_scheduler(pipe, params.get("scheduler", "ddim"))
    pipe = pipe.to(device)
    for name in ("vae", "text_encoder", "text_encoder_2", "projection_model", "language_model", "unet", "vocoder"):
        getattr(pipe, name).eval()
    return pipe


def set_scheduler(pipe, name: str) -> None:
    """``ddim`` (the paper: DDIM, 100 steps) or ``dpm++`` (DPM-Solver++ 2M, multistep, deterministic: about the
    quality of DDIM-100 in 20-25 steps on latent diffusion models, 4-5x fewer UNet calls). Both keep the
    released noise schedule (scaled_linear 0.0015-0.0195, 1000 steps)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name not in SCHEDULERS:
        raise ValueError(f"generate param scheduler={name!r}: use one of {SCHEDULERS}")
    config = pipe.scheduler.config
    if name == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(config)
    else:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


def save_tiny_pipeline(path: str | os.PathLike, params: dict | None = None):
    """Build the tiny pipeline and ``save_pretrained`` it to ``path``; ``build_pipeline({'model': 'full',
    'checkpoint': path})`` loads it back the way users load ``cvssp/audioldm2``. Returns the saved pipeline."""
    pipe = build_pipeline({"model": "tiny", **(params or {})})
    pipe.save_pretrained(str(path))
    return pipe


def tiny_components(params: dict) -> dict:
    """Small seeded components of every class ``cvssp/audioldm2`` uses; no file or network access.

    Widths: ``gpt_dim`` (default 32) = GPT-2 width = the UNet's first cross-attention stream = the mapper's token width;
    ``t5_dim`` (default 16) = T5 width = the second stream. Vocoder hop 160 samples (10 ms at 16 kHz, as the real one)
    with 8 mel bins, VAE factor 2, so 10.24 s is a (4, 512, 4) latent.
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (
        ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model, SpeechT5HifiGan, SpeechT5HifiGanConfig,
        T5Config, T5EncoderModel,
    )

    seed = int(params.get("seed", 0))
    gpt_dim = int(params.get("gpt_dim", 32))
    t5_dim = int(params.get("t5_dim", 16))
    clap_dim = 16
    tokenizer, tokenizer_2 = tiny_tokenizers()

    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=512,
        in_channels=4, out_channels=4, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, gpt_dim, t5_dim], [None, gpt_dim, t5_dim]),
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    torch.manual_seed(seed + 2)
    clap = ClapModel(ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_hidden_layers=1, max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         projection_dim=clap_dim),
        audio_config=dict(spec_size=8, window_size=4, num_mel_bins=8, depths=[1, 1], num_attention_heads=[1, 1],
                          hidden_size=16, patch_embeds_hidden_size=8, patch_size=2, patch_stride=2,
                          num_hidden_layers=1, intermediate_size=16, projection_dim=clap_dim),
        projection_dim=clap_dim,
    ))
    torch.manual_seed(seed + 3)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=t5_dim, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
    ))
    torch.manual_seed(seed + 4)
    gpt2 = GPT2Model(GPT2Config(n_embd=gpt_dim, n_layer=1, n_head=2, n_positions=128, vocab_size=64,
                                bos_token_id=0, eos_token_id=0, max_new_tokens=N_TOKENS))
    torch.manual_seed(seed + 5)
    projection = AudioLDM2ProjectionModel(text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim,
                                          langauge_model_dim=gpt_dim)
    torch.manual_seed(seed + 6)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=SAMPLE_RATE, upsample_initial_channel=16, upsample_rates=[8, 20],
        upsample_kernel_sizes=[16, 40], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    ))
    scheduler = DDIMScheduler(  # the values of cvssp/audioldm2's scheduler config
        num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return dict(
        vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection, language_model=gpt2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(feature_size=8),
        unet=unet, scheduler=scheduler, vocoder=vocoder,
    )


def tiny_tokenizers():
    """A RoBERTa-style BPE tokenizer (CLAP) and a T5 Unigram tokenizer over a few dozen whole words, built in code."""
    from transformers import RobertaTokenizer, T5Tokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    chars = sorted({c for w in _TINY_WORDS for c in w} | {",", "Ġ"})
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), (",", -3.0)]
    pieces += [(f"▁{w}", -5.0) for w in _TINY_WORDS] + [(w, -6.0) for w in _TINY_WORDS]
    tokenizer_2 = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=128)
    return tokenizer, tokenizer_2


def generated_stream_width(pipe) -> int:
    dims = pipe.unet.config.cross_attention_dim  # per block, e.g. [[None, 768, 1024], ...] or an int
    first = dims[0] if isinstance(dims, (list, tuple)) else dims
    if isinstance(first, (list, tuple)):
        first = [d for d in first if d is not None][0]
    return int(first)


PIPELINE_PARTS = ("unet", "vae", "vocoder", "text_encoder", "text_encoder_2", "projection_model", "language_model")


def preflight_pipeline(checkpoint: str | None) -> list[str]:
    """Problems ``AudioLDM2Pipeline.from_pretrained(checkpoint)`` would hit, without loading weights: a local
    folder lacking model_index.json or a component's config/weights; UNet and VAE keys/shapes against the models
    their configs describe, built on meta (safetensors header only)."""
    from frozen.weights import checkpoint_shapes, meta_state, shape_problems

    root = Path(str(checkpoint or "")).expanduser()
    if not checkpoint or not root.is_dir():
        return []  # a hub id or a missing path: the generic check reports it
    if not (root / "model_index.json").is_file():
        return [f"audioldm2 {root}: no model_index.json (expected a save_pretrained / cvssp/audioldm2 folder)"]
    out = []
    for part in PIPELINE_PARTS:
        d = root / part
        weights = sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin"))
        if not (d / "config.json").is_file() or not weights:
            out.append(f"audioldm2 {root}: component {part}/ lacks config.json or its weights file")
            continue
        if part in ("unet", "vae") and weights[0].suffix == ".safetensors":
            from diffusers import AudioLDM2UNet2DConditionModel, AutoencoderKL

            cls = AudioLDM2UNet2DConditionModel if part == "unet" else AutoencoderKL
            own = meta_state(lambda: cls.from_config(cls.load_config(str(d))))
            out += shape_problems(f"audioldm2 {part} {weights[0].name}", own, checkpoint_shapes(weights[0]),
                                  unexpected_ok=False)
    return out


# ----------------------------------------------------------------------------------------------------------------
# random-full: AudioLDM-2 (``cvssp/audioldm2``) components at their released sizes with seeded random weights, built offline
# from the configs below (``model: random-full``, used by ``benchmarks/smoke_full.py`` to prove that the real
# dimensions connect without downloading anything).
# 
# Sizes, from the original AudioLDM-2 ``audioldm2-full`` config as diffusers' conversion script
# (scripts/convert_original_audioldm2_to_diffusers.py) maps it: UNet model_channels 128 x (1, 2, 3, 5), attention at
# downsampling 2/4/8, 2 res blocks, 8 latent channels, cross-attention streams GPT-2 768 + FLAN-T5 1024 after an extra
# self-attention layer; VAE ch 128 x (1, 2, 4), 8 latent channels, 64 mel bins in; HiFi-GAN 16 kHz (hop 160 =
# 5*4*2*2*2, 1024 initial channels); FLAN-T5-large encoder (d_model 1024, 24 layers, 16 heads, d_ff 2816, gated GELU);
# GPT-2 768 x 12; CLAP (transformers' default ClapConfig: RoBERTa-base text tower, HTSAT audio tower, 512-d
# projection); projection model 512 / 1024 -> 768. Tokenizers are the offline tiny ones (their ids fit the full
# vocabularies). The learnt VAE scaling factor of the release is not known here; 0.18215 stands in (scale only).
# ----------------------------------------------------------------------------------------------------------------
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
GPT2 = dict(AUDIOLDM2_GPT2, vocab_size=50257, max_new_tokens=8)  # language_model (frozen/gpt2.py)
PROJECTION = dict(text_encoder_dim=512, text_encoder_1_dim=1024, langauge_model_dim=768)


def random_full_components(params: dict) -> dict:
    """Every component of ``cvssp/audioldm2`` at its released size, seeded random, no file or network access."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model, SpeechT5HifiGan,
                              SpeechT5HifiGanConfig, T5Config, T5EncoderModel)

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
