"""Any device: ``device: auto`` picks CUDA, then Apple MPS, then the CPU (v2a/dist.py); the initial noise of
AudioLDM(-2) is drawn on CPU generators whatever the device, so a seed gives the same sound everywhere (checked
here on the CPU against a CPU-drawn reference: no CUDA or MPS device ran these tests)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import v2a.dist
from infer.audioldm import generate_from_clap
from infer.audioldm2 import build_pipeline, conditioning, generate_audio, initial_noise, latent_shape
from v2a.dist import pick_device

SECONDS = 0.32  # a (4, 16, 4) latent on the tiny AudioLDM-2
STEPS = 2


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(v2a.dist, "mps_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no usable MPS"):
        pick_device("mps")
    monkeypatch.setattr(v2a.dist, "mps_available", lambda: True)
    monkeypatch.setattr(v2a.dist, "_said", set())
    monkeypatch.setenv(v2a.dist.MPS_FALLBACK, "1")
    monkeypatch.setattr(v2a.dist, "_LATE", False)
    with caplog.at_level(logging.INFO, logger="v2a.dist"):
        assert pick_device("auto") == torch.device("mps") == pick_device(None) == pick_device("mps")
    lines = [r.getMessage() for r in caplog.records if r.name == "v2a.dist"]
    assert len(lines) == 1 and "operations MPS lacks run on the CPU" in lines[0]  # one line per process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", local_rank=1) == torch.device("cuda:1")  # CUDA first


def test_mps_without_the_fallback_says_how_to_enable_it(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(v2a.dist, "mps_available", lambda: True)
    monkeypatch.setattr(v2a.dist, "_said", set())
    monkeypatch.setenv(v2a.dist.MPS_FALLBACK, "0")
    with caplog.at_level(logging.INFO, logger="v2a.dist"):
        pick_device("auto")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "v2a.dist"]
    assert "export PYTORCH_ENABLE_MPS_FALLBACK=1" in line


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline({"model": "tiny", "seed": 0, "gpt_dim": 32})
    p.set_progress_bar_config(disable=True)
    return p


def _reference(shape, seeds):
    """The CPU-drawn reference: one float32 standard normal (1, C, H, W) per seed from a CPU generator."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


def test_initial_noise_is_the_cpu_drawn_reference(pipe):
    shape = latent_shape(pipe, SECONDS)
    assert shape == (4, 16, 4)
    got = initial_noise(pipe, [torch.Generator("cpu").manual_seed(s) for s in (3, 9)], SECONDS)
    assert got.device.type == "cpu" and got.dtype == pipe.unet.dtype
    torch.testing.assert_close(got, _reference(shape, [3, 9]), rtol=0, atol=0)


def test_generation_uses_the_cpu_drawn_noise(pipe):
    """generate_audio = the pipeline called with the CPU-drawn reference latents (what a CUDA or MPS run receives
    too: the latents are moved, not drawn, on the device)."""
    tokens = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0))
    labels = ["dog barking", None]
    ours = generate_audio(pipe, tokens, labels, seed=[3, 9], steps=STEPS, audio_seconds=SECONDS)
    cond = conditioning(pipe, tokens, labels)
    direct = pipe(prompt=None, num_inference_steps=STEPS, guidance_scale=3.5, audio_length_in_s=SECONDS,
                  latents=_reference(latent_shape(pipe, SECONDS), [3, 9]), **cond).audios
    np.testing.assert_array_equal(ours, direct)


def test_audioldm_uses_the_cpu_drawn_noise():
    from frozen.audioldm import build_audioldm_pipeline

    p = build_audioldm_pipeline({"model": "tiny", "seed": 0, "clap_dim": 16})
    p.set_progress_bar_config(disable=True)
    emb = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    ours = generate_from_clap(p, emb, seed=[4, 5], steps=STEPS, guidance=1.0, audio_seconds=SECONDS)
    direct = p(prompt=None, num_inference_steps=STEPS, guidance_scale=1.0, audio_length_in_s=SECONDS,
               prompt_embeds=torch.nn.functional.normalize(emb, dim=-1),
               latents=_reference(latent_shape(p, SECONDS), [4, 5])).audios
    np.testing.assert_array_equal(ours, direct)
