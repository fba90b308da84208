"""Embedding networks: checkpoint key names/shapes, front ends against numpy, tiny determinism, strict loading."""

import numpy as np
import pytest
import torch

from scoring.audio import resample
from scoring.embedders import build_embedders, load_checkpoint
from frozen.panns import Cnn14, Cnn14Config
from frozen.passt import PaSST, PaSSTConfig
from frozen.vggish import VGGish, VGGishConfig, vggish_mel_matrix, waveform_to_examples
from scoring.params import EvalParams

SR = 16000


def _sine(f=440.0, seconds=8.0, sr=SR):
    return (0.5 * np.sin(2 * np.pi * f * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_full_models_have_release_checkpoint_names():
    with torch.device("meta"):
        panns, vgg, passt = _shapes(Cnn14()), _shapes(VGGish()), _shapes(PaSST().net)
    assert panns["spectrogram_extractor.stft.conv_real.weight"] == (257, 1, 512)
    assert panns["spectrogram_extractor.stft.conv_imag.weight"] == (257, 1, 512)
    assert panns["logmel_extractor.melW"] == (257, 64)
    assert panns["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    assert panns["bn0.running_mean"] == (64,)
    assert panns["fc1.weight"] == (2048, 2048) and panns["fc_audioset.weight"] == (527, 2048)
    assert sorted(k.split(".")[1] for k in vgg if k.startswith("features.") and k.endswith("weight")) == \
        ["0", "11", "13", "3", "6", "8"]
    assert vgg["embeddings.0.weight"] == (4096, 12288) and vgg["embeddings.4.weight"] == (128, 4096)
    assert passt["freq_new_pos_embed"] == (1, 768, 12, 1) and passt["time_new_pos_embed"] == (1, 768, 1, 99)
    assert passt["new_pos_embed"] == (1, 2, 768) and passt["patch_embed.proj.weight"] == (768, 1, 16, 16)
    assert passt["blocks.11.attn.qkv.bias"] == (2304,) and passt["head.1.weight"] == (527, 768)
    assert passt["head.0.weight"] == (768,) and passt["head_dist.weight"] == (527, 768)
    assert len([k for k in passt if k.startswith("blocks.")]) == 12 * 12


def test_panns_spectrogram_matches_numpy_stft():
    net = Cnn14(Cnn14Config.tiny())
    x = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    with torch.no_grad():
        ours = net.spectrogram_extractor(torch.from_numpy(x)[None])[0, 0].numpy()  # (T, 257)
    padded = np.pad(x.astype(np.float64), 256, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    frames = np.stack([padded[i:i + 512] for i in range(0, len(padded) - 511, 160)])
    ref = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-2)


def test_vggish_examples_and_mel():
    ex = waveform_to_examples(_sine())
    assert ex.shape == (8, 96, 64) and ex.dtype == np.float32  # 8 s -> 8 examples of 0.96 s
    w = vggish_mel_matrix()
    assert w.shape == (257, 64) and (w[0] == 0).all() and (w >= 0).all()
    peak_hz = np.argmax(w, axis=0) * 8000 / 256
    assert np.all(np.diff(peak_hz) >= 0) and 100 < peak_hz[0] < 200 and 7000 < peak_hz[-1] < 7600
    assert waveform_to_examples(np.zeros(1000)).shape == (0, 96, 64)


def test_passt_frontend_grid_matches_positional_embeddings():
    with torch.device("meta"):
        assert PaSSTConfig().clip_samples == 320000 and PaSSTConfig().grid == (12, 99)
    m = PaSST(PaSSTConfig(embed_dim=8, depth=1, heads=2, classes=6)).eval()  # full-size front end and grid
    with torch.no_grad():
        mel = m.mel(torch.zeros(1, 320000) + 0.01)
        patches = m.net.patch_embed(mel)
    assert mel.shape == (1, 1, 128, 1000)  # pre-emphasis drops one sample: 1 + 319999 // 320
    assert patches.shape[-2:] == (12, 99) == (m.cfg.grid[0], m.cfg.grid[1])


def test_resample_keeps_frequency():
    y = resample(_sine(1000.0, 1.0), 16000, 32000)
    assert len(y) == 32000
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 32000 / len(y) - 1000.0) < 2


def test_tiny_embedders_shapes_and_determinism():
    a, b = build_embedders(EvalParams(model="tiny", seed=3)), build_embedders(EvalParams(model="tiny", seed=3))
    x = _sine()
    for name in ("panns", "vggish", "passt"):
        ea, eb = a[name].embed(x), b[name].embed(x)
        np.testing.assert_array_equal(ea.embedding, eb.embedding)
        assert np.isfinite(ea.embedding).all()
    assert a["panns"].embed(x).logits.shape == (6,)
    assert a["vggish"].embed(x).embedding.shape == (8, 8)
    assert a["passt"].embed(x).logits.shape == (6,)
    c = build_embedders(EvalParams(model="tiny", seed=4))
    assert not np.allclose(c["panns"].embed(x).embedding, a["panns"].embed(x).embedding)


def test_full_requires_checkpoint_paths():
    with pytest.raises(ValueError, match="panns_ckpt"):
        build_embedders(EvalParams(model="full"))
    with pytest.raises(ValueError, match="'full' or 'tiny'"):
        build_embedders(EvalParams(model="huge"))


def test_load_checkpoint_round_trip_and_strictness(tmp_path):
    torch.manual_seed(1)
    src = VGGish(VGGishConfig.tiny())
    ckpt = tmp_path / "vggish.pth"
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    sd["pproc._pca_means"] = torch.zeros(8)
    torch.save({"model": sd}, ckpt)
    torch.manual_seed(2)
    dst = VGGish(VGGishConfig.tiny())
    load_checkpoint(dst, ckpt, ignore=("pproc.",))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
    with pytest.raises(RuntimeError, match="unexpected"):
        load_checkpoint(VGGish(VGGishConfig.tiny()), ckpt, unexpected="raise")  # pproc keys not ignored
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in src.state_dict().items() if k != "embeddings.4.bias"}, bad)
    with pytest.raises(RuntimeError, match="embeddings.4.bias"):
        load_checkpoint(VGGish(VGGishConfig.tiny()), bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(dst, tmp_path / "nope.pth")
