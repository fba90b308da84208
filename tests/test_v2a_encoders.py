"""V2A-Mapper's frozen encoders (CLIP image, CLAP audio) with tiny seeded models: preprocessing against the
transformers processors, values against direct model calls, save_pretrained round trips, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frozen import clap, clip


@pytest.fixture(scope="module")
def frames():
    g = np.random.default_rng(0)
    return torch.from_numpy(g.integers(0, 256, size=(2, 40, 224, 224, 3), dtype=np.uint8))


def test_clip_preprocessing_equals_clip_image_processor(frames):
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor()  # OpenAI CLIP defaults: shortest edge 224, centre crop 224, CLIP mean/std
    imgs = [f.numpy() for f in frames[0, :3]]
    want = proc(images=imgs, return_tensors="pt").pixel_values  # (3, 3, 224, 224)
    torch.testing.assert_close(clip.preprocess(frames[0, :3], 224), want, rtol=1e-5, atol=1e-5)


def test_clip_encoder_equals_direct_model_call(frames):
    enc = clip.build({"model": "tiny", "seed": 0})
    out = enc.encode(frames, torch.tensor([40, 12]))
    assert out.shape == (2, 40, 16) and enc.info.output_shape == (40, 16) and enc.info.input_kind == "frames"
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 40))
    model = clip.tiny_model(0).eval()
    with torch.no_grad():
        px = clip.preprocess(frames[1, 5:7], 224)
        want = F.normalize(model(pixel_values=px).image_embeds, dim=-1)
    torch.testing.assert_close(out[1, 5:7], want, rtol=1e-4, atol=1e-5)
    raw = clip.build({"model": "tiny", "seed": 0, "normalize": False, "frame_batch": 7})
    raw = raw.encode(frames, torch.tensor([40, 40]))
    torch.testing.assert_close(F.normalize(raw, dim=-1), out, rtol=1e-4, atol=1e-5)  # frame batching is invisible


def test_clip_full_loads_a_save_pretrained_folder(frames, tmp_path):
    clip.tiny_model(3).save_pretrained(tmp_path / "clip")
    full = clip.build({"model": "full", "checkpoint": str(tmp_path / "clip")})
    tiny = clip.build({"model": "tiny", "seed": 3})
    lengths = torch.tensor([40, 40])
    torch.testing.assert_close(full.encode(frames, lengths), tiny.encode(frames, lengths))
    assert full.info.checkpoint == {"source": str(tmp_path / "clip")}
    with pytest.raises(FileNotFoundError, match="clip params: checkpoint"):
        clip.build({"model": "full", "checkpoint": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode(frames.float(), lengths)


def sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def test_resampling_to_48k_keeps_a_sine():
    up = clap.resample_to(sine(1000.0, 16000, 1.0), 48000)
    want = sine(1000.0, 48000, 1.0)
    assert up.shape == want.shape
    np.testing.assert_allclose(up[2000:-2000], want[2000:-2000], atol=2e-3)  # edges: the filter's transient


def test_clap_encoder_equals_direct_feature_extractor_and_audio_branch():
    g = np.random.default_rng(1)
    audio = torch.from_numpy((0.1 * g.standard_normal((2, 160000))).astype(np.float32))
    lengths = torch.tensor([160000, 64000])
    enc = clap.build({"model": "tiny", "seed": 0})
    out = enc.encode(audio, lengths)
    assert out.shape == (2, 1, 16) and enc.info.output_shape == (1, 16) and enc.info.input_kind == "audio"
    from transformers import ClapFeatureExtractor

    model, fe = clap.tiny_model(0).eval(), ClapFeatureExtractor()
    waves = [clap.resample_to(audio[i, : int(n)].numpy(), 48000) for i, n in enumerate(lengths)]
    feats = fe(waves, sampling_rate=48000, return_tensors="pt", truncation="rand_trunc")
    assert feats["input_features"].shape == (2, 1, 1001, 64)
    with torch.no_grad():
        pooled = model.audio_model(input_features=feats["input_features"], is_longer=feats["is_longer"]).pooler_output
        want = F.normalize(model.audio_projection(pooled), dim=-1)
    torch.testing.assert_close(out[:, 0], want, rtol=1e-4, atol=1e-5)
    audio2 = audio.clone()
    audio2[1, 64000:] = 0.5  # beyond the real length: ignored
    torch.testing.assert_close(enc.encode(audio2, lengths), out)
    with pytest.raises(ValueError, match="lengths >= 1"):
        enc.encode(audio, torch.tensor([0, 5]))


def test_clap_full_loads_model_and_feature_extractor_folder(tmp_path):
    from transformers import ClapFeatureExtractor

    clap.tiny_model(2).save_pretrained(tmp_path / "clap")
    ClapFeatureExtractor().save_pretrained(tmp_path / "clap")
    audio = torch.from_numpy(np.stack([sine(440.0, 16000, 10.0), sine(2000.0, 16000, 10.0)]))
    lengths = torch.tensor([160000, 160000])
    full = clap.build({"model": "full", "checkpoint": str(tmp_path / "clap")})
    tiny = clap.build({"model": "tiny", "seed": 2})
    torch.testing.assert_close(full.encode(audio, lengths), tiny.encode(audio, lengths))
    with pytest.raises(FileNotFoundError, match="clap params: checkpoint"):
        clap.build({"model": "full", "checkpoint": str(tmp_path / "nowhere")})
