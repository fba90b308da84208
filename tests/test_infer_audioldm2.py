"""AudioLDM-2 generation from mapper tokens, on the tiny seeded pipeline (offline, CPU, a few seconds)."""

import numpy as np
import pytest
import torch

from infer.audioldm2 import build_pipeline, clip_seed, conditioning, generate_audio, save_tiny_pipeline

SECONDS = 0.32  # 5120 samples: 32 mel frames, a (4, 16, 4) latent
STEPS = 2
LABELS = ["dog bow-wow barking cat meowing", None]  # 6 T5 tokens, as many as the negative prompt


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline({"model": "tiny", "seed": 0, "gpt_dim": 32})
    p.set_progress_bar_config(disable=True)
    return p


def _tokens(seed, n=2, width=32):
    return torch.randn(n, 8, width, generator=torch.Generator().manual_seed(seed))


def _gen(pipe, tokens, labels=LABELS, **kw):
    kw = {"seed": [3, 4][: len(labels)], "steps": STEPS, "audio_seconds": SECONDS, **kw}
    return generate_audio(pipe, tokens, labels, **kw)


def test_matches_diffusers_own_prompt_encoding(pipe, monkeypatch):
    """Same audio as AudioLDM2Pipeline.__call__ encoding the labels and the negative prompt itself, with its GPT-2
    step replaced by our tokens (positive) and zeros (negative)."""
    tokens = _tokens(0)
    ours = _gen(pipe, tokens)
    queue = [tokens, torch.zeros_like(tokens)]
    monkeypatch.setattr(pipe, "generate_language_model", lambda *a, **k: queue.pop(0))
    direct = pipe(
        prompt=[l or "" for l in LABELS], negative_prompt=["low quality, average quality"] * 2,
        num_inference_steps=STEPS, guidance_scale=3.5, audio_length_in_s=SECONDS,
        generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)],
    ).audios
    assert not queue
    assert ours.shape == (2, int(SECONDS * 16000)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max())


def test_matches_direct_call_with_same_embeddings(pipe):
    tokens = _tokens(1)
    cond = conditioning(pipe, tokens, LABELS)
    direct = pipe(prompt=None, num_inference_steps=STEPS, guidance_scale=3.5, audio_length_in_s=SECONDS,
                  generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)], **cond).audios
    np.testing.assert_array_equal(_gen(pipe, tokens), direct)


def test_pipeline_gpt2_is_never_called(pipe, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the pipeline's GPT-2 was called")

    monkeypatch.setattr(pipe, "generate_language_model", boom)
    handle = pipe.language_model.register_forward_pre_hook(boom)
    try:
        audio = _gen(pipe, _tokens(2))
    finally:
        handle.remove()
    assert np.isfinite(audio).all()


def test_tokens_drive_the_output(pipe):
    a, b = _gen(pipe, _tokens(5)), _gen(pipe, _tokens(6))
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()


def test_seeds_repeat_and_do_not_depend_on_the_batch(pipe):
    tokens = _tokens(7)
    a = _gen(pipe, tokens)
    np.testing.assert_array_equal(a, _gen(pipe, tokens))
    other = _gen(pipe, tokens, seed=[5, 6])
    assert np.abs(a - other).max() > 1e-2 * np.abs(a).max()
    alone = _gen(pipe, tokens[1:], labels=LABELS[1:], seed=[4])
    np.testing.assert_allclose(alone[0], a[1], rtol=1e-4, atol=1e-5 * np.abs(a).max())
    split = _gen(pipe, tokens, batch_size=1)
    np.testing.assert_allclose(split, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_negative_generated_from_prompt(pipe):
    tokens = _tokens(8)
    zeros = conditioning(pipe, tokens, LABELS)["negative_generated_prompt_embeds"]
    from_prompt = conditioning(pipe, tokens, LABELS, negative_generated="prompt")["negative_generated_prompt_embeds"]
    assert zeros.shape == from_prompt.shape == (2, 8, 32)
    assert not zeros.any() and from_prompt.abs().sum() > 0
    assert torch.equal(from_prompt[0], from_prompt[1])
    assert np.isfinite(_gen(pipe, tokens, negative_generated="prompt")).all()


def test_no_guidance_passes_no_negatives(pipe):
    cond = conditioning(pipe, _tokens(9), LABELS, guidance=1.0)
    assert set(cond) == {"prompt_embeds", "attention_mask", "generated_prompt_embeds"}
    assert np.isfinite(_gen(pipe, _tokens(9), guidance=1.0)).all()


def test_bad_arguments_are_named(pipe):
    with pytest.raises(ValueError, match="expects"):
        _gen(pipe, _tokens(0, width=16))
    with pytest.raises(ValueError, match="prompts"):
        _gen(pipe, _tokens(0), labels=["dog"], seed=[1, 2])
    with pytest.raises(ValueError, match="negative_generated"):
        _gen(pipe, _tokens(0), negative_generated="ones")
    with pytest.raises(ValueError, match="model"):
        build_pipeline({"model": "huge"})


def test_tiny_pipeline_round_trip(pipe, tmp_path):
    save_tiny_pipeline(tmp_path / "audioldm2", {"seed": 0, "gpt_dim": 32})
    loaded = build_pipeline({"model": "full", "checkpoint": str(tmp_path / "audioldm2")})
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert type(loaded.tokenizer_2).__name__ == type(pipe.tokenizer_2).__name__
    assert loaded.tokenizer_2("dog bow-wow").input_ids == pipe.tokenizer_2("dog bow-wow").input_ids
    tokens = _tokens(10)
    np.testing.assert_allclose(_gen(loaded, tokens), _gen(pipe, tokens), rtol=1e-5, atol=1e-7)


def test_clip_seed_is_stable_and_distinct():
    assert clip_seed(0, "abc_000010") == clip_seed(0, "abc_000010")
    assert len({clip_seed(0, "a"), clip_seed(0, "b"), clip_seed(1, "a")}) == 3
    assert 0 <= clip_seed(123, "x") < 2**31
