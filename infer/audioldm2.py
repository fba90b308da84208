"""AudioLDM-2 generation from the mapper's tokens (paper section 4.1.2; docs/models.md section 6, "Generation with
AudioLDM2Pipeline").

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

The pipeline itself (released, ``tiny`` and ``random-full`` builds, the scheduler, the preflight) is frozen-model
code: frozen/audioldm2.py.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import numpy as np
import torch

from frozen.audioldm2 import (N_TOKENS, PIPELINE_PARTS, SAMPLE_RATE, build_pipeline, generated_stream_width, preflight_pipeline,  # noqa: F401
                              save_tiny_pipeline, set_scheduler, tiny_components, tiny_tokenizers)
from frozen.names import DEFAULT_NEGATIVE_PROMPT, NEGATIVE_GENERATED, SCHEDULERS  # noqa: F401 (re-exported here)
from infer.params import GenerationSettings

log = logging.getLogger(__name__)
_DEFAULT = GenerationSettings()  # the defaults of every generation setting (infer/params.py)


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------
def generate_audio(
    pipe,
    tokens: torch.Tensor | np.ndarray,
    prompts: Sequence[str | None],
    *,
    seed: int | Sequence[int],
    negative_prompt: str | None = _DEFAULT.negative_prompt,
    negative_generated: str = _DEFAULT.negative_generated,
    steps: int = _DEFAULT.steps,
    guidance: float = _DEFAULT.guidance,
    audio_seconds: float = _DEFAULT.audio_seconds,
    eta: float = _DEFAULT.eta,
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
        latents = initial_noise(pipe, generators, audio_seconds)  # drawn on the CPU, whatever the device
        audio = pipe(
            prompt=None, num_inference_steps=steps, guidance_scale=guidance, audio_length_in_s=audio_seconds,
            eta=eta, generator=generators, latents=latents, output_type="np", return_dict=False, **cond,
        )[0]  # (b, samples)
        out.append(np.asarray(audio, dtype=np.float32))
    return np.concatenate(out, axis=0)


def latent_shape(pipe, audio_seconds: float) -> tuple[int, int, int]:
    """(channels, frames, mel bins) of one clip's initial latents, as the AudioLDM(-2) pipeline derives them from
    the length (its ``__call__`` step 0 and ``prepare_latents``: the height rounded up to the VAE's scale)."""
    voc = pipe.vocoder.config
    upsample = float(np.prod(voc.upsample_rates)) / voc.sampling_rate
    height, scale = int(audio_seconds / upsample), pipe.vae_scale_factor
    if height % scale:
        height = int(np.ceil(height / scale)) * scale
    return int(pipe.unet.config.in_channels), height // scale, int(voc.model_in_dim) // scale


def initial_noise(pipe, generators: Sequence[torch.Generator], audio_seconds: float) -> torch.Tensor:
    """The initial latents of a batch, one row per CPU generator, drawn as diffusers draws them (``randn_tensor``
    with a list of generators: a (1, C, H, W) standard normal each, float32 on the CPU), then cast to the UNet's
    dtype and left on the CPU (the pipeline moves them). The generators go on to the pipeline (DDIM's step noise
    when eta > 0) in the same state as if the pipeline had drawn the latents itself. Drawing on the CPU makes a seed
    give the same noise, hence the same sound up to float rounding, on every device (CUDA, MPS, CPU)."""
    shape = (1, *latent_shape(pipe, audio_seconds))
    noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])  # (B, C, H, W)
    return noise.to(pipe.unet.dtype)


def conditioning(
    pipe,
    tokens: torch.Tensor,
    prompts: Sequence[str | None],
    *,
    negative_prompt: str | None = _DEFAULT.negative_prompt,
    negative_generated: str = _DEFAULT.negative_generated,
    guidance: float = _DEFAULT.guidance,
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
