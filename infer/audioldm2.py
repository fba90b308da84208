"""AudioLDM-2 generation from the mapper's tokens (paper section 4.1.2, reference/MODELS.md section 6).

The mapper replaces AudioLDM-2's own GPT-2: its (B, 8, D) tokens go to the UNet's first cross-attention stream as
``generated_prompt_embeds``; the class label, encoded by the pipeline's FLAN-T5, goes to the second stream.

Two traps of diffusers' ``AudioLDM2Pipeline`` (0.42.1) are avoided by always calling it with ``prompt=None`` and all
six conditioning tensors (positive and negative ``prompt_embeds``, ``attention_mask``, ``generated_prompt_embeds``):

- Trap 1: with ``prompt_embeds=None`` the supplied ``generated_prompt_embeds`` are silently recomputed from the text.
- Trap 2: the pipeline's GPT-2 loop calls ``_update_model_kwargs_for_generation``, which ``GPT2Model`` lacks under
  transformers 5 (diffusers issue #12630). With every tensor supplied the pipeline never runs its GPT-2.

Negatives for classifier-free guidance (``negative_generated``):

- ``zeros`` (default): zeros(8, D) for the AudioMAE stream, the unconditional value of the original AudioLDM-2 code
  (the value the LDM saw when its AudioMAE condition was dropped). The negative prompt still enters through T5.
- ``prompt``: what diffusers does: the negative prompt through CLAP + T5 -> projection -> AudioLDM-2's GPT-2 (run by
  our own 8-step loop, not the pipeline's broken one).

``model: tiny`` builds the same classes small, seeded and offline, for tests and the demo.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from infer.params import DEFAULT_NEGATIVE_PROMPT, NEGATIVE_GENERATED, SCHEDULERS  # re-exported here

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_TOKENS = 8

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
        from infer.audioldm2_full import random_full_components

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


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------
def generate_audio(
    pipe,
    tokens: torch.Tensor | np.ndarray,
    prompts: Sequence[str | None],
    *,
    seed: int | Sequence[int],
    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
    negative_generated: str = "zeros",
    steps: int = 100,
    guidance: float = 3.5,
    audio_seconds: float = 10.24,
    eta: float = 0.0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Generate one waveform per clip from the mapper's tokens; returns float32 (B, samples) at 16 kHz.

    tokens: (B, 8, D) pooled-AudioMAE predictions, D = the UNet's first cross-attention width (768 for the full model).
    prompts: B class labels; ``None`` or ``''`` means no text prompt (T5 then encodes the empty string).
    seed: one int per clip, or an int ``s`` meaning ``s + i`` for clip i. Each clip gets its own CPU
    ``torch.Generator``, so its initial noise does not depend on the batch it is in.
    batch_size: clips per pipeline call (default: all).
    """
    tokens = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    n = tokens.shape[0]
    _check_generate_args(pipe, tokens, prompts, negative_generated, steps, guidance)
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"seed has {len(seeds)} values for {n} clips: give one per clip or a single int")
    batch_size = batch_size or n
    out = []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        cond = conditioning(pipe, tokens[sl], list(prompts[sl]), negative_prompt=negative_prompt,
                            negative_generated=negative_generated, guidance=guidance)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[sl]]
        audio = pipe(
            prompt=None, num_inference_steps=steps, guidance_scale=guidance, audio_length_in_s=audio_seconds,
            eta=eta, generator=generators, output_type="np", return_dict=False, **cond,
        )[0]  # (b, samples)
        out.append(np.asarray(audio, dtype=np.float32))
    return np.concatenate(out, axis=0)


def conditioning(
    pipe,
    tokens: torch.Tensor,
    prompts: Sequence[str | None],
    *,
    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
    negative_generated: str = "zeros",
    guidance: float = 3.5,
) -> dict:
    """The keyword arguments of ``AudioLDM2Pipeline.__call__`` that carry every conditioning tensor.

    T5 ``prompt_embeds`` (B, L, D_t5) and the negative ones share one padding length L (the longest of the labels and
    the negative prompt; diffusers instead cuts the negative prompt to the labels' length).
    """
    device, dtype = pipe._execution_device, pipe.unet.dtype
    n = tokens.shape[0]
    texts = [(p or "").strip() for p in prompts]
    use_cfg = guidance > 1.0
    negative = (negative_prompt or "").strip()
    embeds, mask = t5_embeddings(pipe, texts + ([negative] if use_cfg else []))  # (B[+1], L, D_t5), (B[+1], L)
    cond = dict(
        prompt_embeds=embeds[:n].to(dtype),
        attention_mask=mask[:n],
        generated_prompt_embeds=tokens.to(device=device, dtype=dtype),  # (B, 8, D)
    )
    if use_cfg:
        cond["negative_prompt_embeds"] = embeds[n:].expand(n, -1, -1).to(dtype)
        cond["negative_attention_mask"] = mask[n:].expand(n, -1)
        if negative_generated == "zeros":
            neg = torch.zeros_like(cond["generated_prompt_embeds"])
        else:
            neg = negative_generated_from_prompt(pipe, negative).to(dtype).expand(n, -1, -1)
        cond["negative_generated_prompt_embeds"] = neg
    return cond


@torch.inference_mode()
def t5_embeddings(pipe, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAN-T5 hidden states of ``texts`` as the pipeline's ``encode_prompt`` computes them (padding to the longest,
    truncation at the tokenizer's ``model_max_length``); returns (N, L, D_t5) and the (N, L) attention mask."""
    tok = pipe.tokenizer_2
    enc = tok(list(texts), padding=True, max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    device = pipe._execution_device
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    return pipe.text_encoder_2(ids, attention_mask=mask)[0], mask


@torch.inference_mode()
def negative_generated_from_prompt(pipe, text: str) -> torch.Tensor:
    """AudioLDM-2's 8 generated tokens for ``text`` (CLAP + T5 -> projection -> GPT-2), computed by our own loop:
    run GPT-2 on the sequence, append the last position's final hidden state, 8 times. Returns (1, 8, D)."""
    device = pipe._execution_device
    tok = pipe.tokenizer
    enc = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    clap = pipe.text_encoder.get_text_features(enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device))
    clap = getattr(clap, "pooler_output", clap)[:, None, :]  # (1, 1, D_clap)
    t5, t5_mask = t5_embeddings(pipe, [text])  # (1, L, D_t5)
    proj = pipe.projection_model(hidden_states=clap, hidden_states_1=t5,
                                 attention_mask=torch.ones(1, 1, dtype=torch.long, device=device),
                                 attention_mask_1=t5_mask)
    h, mask = proj.hidden_states, proj.attention_mask  # (1, S, D), (1, S)
    gpt2 = getattr(pipe.language_model, "transformer", pipe.language_model)  # GPT2Model or GPT2LMHeadModel
    for _ in range(N_TOKENS):
        last = gpt2(inputs_embeds=h, attention_mask=mask).last_hidden_state[:, -1:]  # (1, 1, D), after ln_f
        h = torch.cat([h, last], dim=1)
        mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
    return h[:, -N_TOKENS:]


def clip_seed(base_seed: int, clip_id: str) -> int:
    """A per-clip seed from the run's seed and the clip id (stable across runs, machines and batch layouts)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{clip_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _check_generate_args(pipe, tokens, prompts, negative_generated, steps, guidance) -> None:
    width = generated_stream_width(pipe)
    if tokens.ndim != 3 or tokens.shape[1] != N_TOKENS or tokens.shape[2] != width:
        raise ValueError(
            f"tokens have shape {tuple(tokens.shape)}; the pipeline expects (B, {N_TOKENS}, {width}) "
            f"(the width of the UNet's first cross-attention stream)"
        )
    if len(prompts) != tokens.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {tokens.shape[0]} clips: give one label (or None) per clip")
    if negative_generated not in NEGATIVE_GENERATED:
        raise ValueError(f"negative_generated={negative_generated!r}: use one of {NEGATIVE_GENERATED}")
    if int(steps) < 1:
        raise ValueError(f"steps={steps}: need at least 1 denoising step")
    if guidance < 0:
        raise ValueError(f"guidance={guidance}: must be >= 0 (values <= 1 turn classifier-free guidance off)")


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
