"""AudioMAE target: Kaldi fbank vs kaldi-native-fbank, front-end constants, ViT keys, loading, pooling, layers."""

import logging

import numpy as np
import pytest
import torch

from frozen import audiomae as am
from frozen.audio import FLOAT32_EPS, FbankConfig, fbank, mel_banks

SR = 16000


# ----------------------------------------------------------------------------------------- signals


def _signals(n: int = am.SEGMENT_SAMPLES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(n) / SR
    dur = n / SR
    chirp = 0.4 * np.sin(2 * np.pi * (50 * t + (7900 / (2 * dur)) * t**2))  # 50 Hz -> 7950 Hz
    # a "recording": low noise floor, a voiced harmonic stack with gliding f0 and 4 Hz syllables, two knocks
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 25)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    voice *= (t > 1.0) & (t < 7.0)
    knocks = np.zeros(n)
    for start in (2.5, 8.0):
        i = int(start * SR)
        knocks[i:] += rng.standard_normal(n - i) * np.exp(-(t[i:] - start) * 40) * 0.8
    floor = np.cumsum(rng.standard_normal(n)) * 1e-4  # brown-ish background
    recording = 0.3 * voice + knocks + floor - floor.mean()
    return {
        "sine": 0.5 * np.sin(2 * np.pi * 440 * t),
        "noise": 0.3 * rng.standard_normal(n),
        "chirp": chirp,
        "recording": recording / np.abs(recording).max() * 0.5,
    }


# ----------------------------------------------------------------------------------------- fbank


@pytest.mark.parametrize("num_bins", [80, 126])
def test_fbank_matches_kaldi_native_fbank(num_bins, knf_fbank):
    sigs = {k: v.astype(np.float32) for k, v in _signals().items()}
    ours = fbank(torch.from_numpy(np.stack(list(sigs.values()))), FbankConfig(num_mel_bins=num_bins)).numpy()
    assert ours.shape == (len(sigs), 1022, num_bins)
    for i, (name, x) in enumerate(sigs.items()):
        ref = knf_fbank(x, num_bins)
        err = np.abs(ours[i] - ref)
        # float32 FFT rounding dominates only near the log floor (energies ~1e-7); elsewhere ~1e-4
        assert err.max() < 0.03, (name, err.max())
        assert err[ref > -10].max() < 5e-3, (name, err[ref > -10].max())
        assert np.median(err) < 1e-4, name


def test_fbank_128_bins_has_an_empty_filter_like_torchaudio(knf_fbank):
    """128 mel bins on a 512-point FFT leave bin 3 without any FFT bin: Kaldi (and kaldi-native-fbank) refuse,
    torchaudio (what AudioLDM-2 ran) keeps an all-zero filter, whose log energy is log(float32 eps)."""
    pytest.importorskip("kaldi_native_fbank")
    with pytest.raises(ValueError, match="num_mel_bins too large"):
        knf_fbank(np.ones(800, np.float32), 128)
    banks = mel_banks(FbankConfig(num_mel_bins=128)).double().numpy()
    # Kaldi's per-bin loop, float64: weight on FFT bins strictly inside (left, right), Nyquist bin unused
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    delta = (hi - lo) / 129
    want = np.zeros((128, 257))
    for b in range(128):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        for k in range(256):
            m = mel(k * SR / 512)
            if left < m < right:
                want[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    np.testing.assert_allclose(banks, want, atol=3e-5)  # torchaudio builds them in float32 (next test)
    assert np.flatnonzero(want.sum(1) == 0).tolist() == [3] and np.flatnonzero(banks.sum(1) == 0).tolist() == [3]
    x = torch.from_numpy(_signals()["noise"].astype(np.float32))[None]
    out = fbank(x, FbankConfig(num_mel_bins=128))
    assert out.shape == (1, 1022, 128)
    assert torch.all(out[0, :, 3] == np.float32(np.log(np.float32(FLOAT32_EPS))))


def test_mel_banks_are_built_in_float32_like_torchaudio():
    """torchaudio's get_mel_banks works in float32 (int arange x Python-float delta, float32 FFT-bin mels): up to
    ~1.4e-5 from the float64 filters at 128 bins. Re-evaluated here in numpy float32, in that order (the log of the
    FFT-bin frequencies with torch's float32 log, which torchaudio calls; numpy's differs by an ulp)."""
    f32 = np.float32
    lo, hi = 1127.0 * np.log(1.0 + 20.0 / 700.0), 1127.0 * np.log(1.0 + 8000.0 / 700.0)  # Python-float scalars
    delta = (hi - lo) / 129
    b = np.arange(128, dtype=f32)[:, None]
    left, center, right = (f32(lo) + b * f32(delta), f32(lo) + (b + f32(1)) * f32(delta),
                           f32(lo) + (b + f32(2)) * f32(delta))
    fft_hz = f32(SR / 512) * np.arange(256, dtype=f32)
    mel = f32(1127.0) * torch.from_numpy(f32(1.0) + fft_hz / f32(700.0)).log().numpy()[None]  # (1, 256)
    want = np.maximum(f32(0), np.minimum((mel - left) / (center - left), (right - mel) / (right - center)))
    banks = mel_banks(FbankConfig(num_mel_bins=128)).numpy()
    assert banks.dtype == np.float32 and banks.shape == (128, 257) and not banks[:, 256].any()
    np.testing.assert_array_equal(banks[:, :256], want)


# ----------------------------------------------------------------------------------------- front end


def test_prepare_waveform_normalises_real_samples_and_pads():
    rng = np.random.default_rng(1)
    audio = torch.zeros(3, am.CLIP_SAMPLES)
    audio[0] = torch.from_numpy(0.1 + 0.2 * rng.standard_normal(am.CLIP_SAMPLES)).float()
    audio[1, :50000] = torch.from_numpy(0.3 + 0.05 * rng.standard_normal(50000)).float()
    lengths = torch.tensor([am.CLIP_SAMPLES, 50000, 0])
    wave = am.prepare_waveform(audio, lengths)
    assert wave.shape == (3, am.SEGMENT_SAMPLES) and wave.dtype == torch.float32
    for i, n in enumerate([am.CLIP_SAMPLES, 50000]):
        x = audio[i, :n].double()
        x = x - x.mean()
        want = x / (x.abs().max() + 1e-8) * 0.5
        torch.testing.assert_close(wave[i, :n].double(), want, atol=1e-6, rtol=0)
        assert abs(float(wave[i, :n].abs().max()) - 0.5) < 1e-6
        assert torch.all(wave[i, n:] == 0)
    assert torch.all(wave[2] == 0)


def test_fbank_constants_and_1024_padding():
    assert (am.FBANK_MEAN, am.FBANK_STD) == (-4.2677393, 4.5689974)
    assert am.SEGMENT_SAMPLES == 163840 and am.TARGET_FRAMES == 1024
    wave = am.prepare_waveform(torch.from_numpy(_signals(am.CLIP_SAMPLES)["recording"]).float()[None],
                               torch.tensor([am.CLIP_SAMPLES]))
    x = am.audio_to_fbank(wave)
    assert x.shape == (1, 1024, 128)
    raw = fbank(wave - wave.mean(), FbankConfig(num_mel_bins=128))  # (1, 1022, 128)
    torch.testing.assert_close(x[:, :1022], (raw + 4.2677393) / (4.5689974 * 2))
    pad_value = torch.tensor(4.2677393 / 9.1379948)  # zero rows are normalised too (0.467...)
    assert torch.allclose(x[:, 1022:], pad_value.expand(1, 2, 128))


def test_is_silent_peak_and_rms():
    t = torch.arange(am.CLIP_SAMPLES) / SR
    tone = torch.sin(2 * torch.pi * 440 * t)
    audio = torch.stack([tone * 0.1, tone * 1e-4, torch.zeros_like(t), tone * 0.1])
    lengths = torch.tensor([am.CLIP_SAMPLES, am.CLIP_SAMPLES, am.CLIP_SAMPLES, 0])
    assert am.is_silent(audio, lengths, -60.0).tolist() == [False, True, True, True]  # -20 dB, -80 dB, zeros, empty
    audio[1, 1000] = 0.01  # one -40 dB click: not silent by peak, silent by RMS
    assert am.is_silent(audio, lengths, -60.0, measure="peak").tolist()[1] is False
    assert am.is_silent(audio, lengths, -60.0, measure="rms").tolist()[1] is True
    short = torch.tensor([am.CLIP_SAMPLES, 500, am.CLIP_SAMPLES, 0])  # the click lies after the real samples
    assert am.is_silent(audio, short, -60.0).tolist()[1] is True
    with pytest.raises(ValueError, match="measure"):
        am.is_silent(audio, lengths, measure="loudness")


# ----------------------------------------------------------------------------------------- ViT


def test_full_state_dict_matches_reference_keys_on_meta(meta_keys, reference_keys):
    with torch.device("meta"):
        model = am.AudioMAEViT(am.AudioMAEConfig.full())
    got = meta_keys(lambda: model)
    assert got == reference_keys("audiomae_keys")
    assert len(got) == 150
    block = (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 4 * 768
    total = 768 + 513 * 768 + (256 * 768 + 768) + 12 * block + 2 * 768  # cls, pos, patch, blocks, norm
    assert sum(v.numel() for v in model.state_dict().values()) == total == 85_648_128


def _tiny(seed: int = 0) -> am.AudioMAEViT:
    return am.freeze(am.init_tiny_weights_(am.AudioMAEViT(am.AudioMAEConfig.tiny()), seed))


def test_patch_tokens_are_time_major():
    model = _tiny()
    x = torch.randn(1, 1, 1024, 128)
    tokens = model.patch_embed(x)  # (1, 512, C)
    w, b = model.patch_embed.proj.weight, model.patch_embed.proj.bias  # (C, 1, 16, 16), (C,)
    for t, f in [(0, 0), (0, 7), (1, 0), (37, 5), (63, 7)]:
        patch = x[0, 0, t * 16 : (t + 1) * 16, f * 16 : (f + 1) * 16]
        want = (w[:, 0] * patch).sum(dim=(1, 2)) + b
        torch.testing.assert_close(tokens[0, t * 8 + f], want, atol=1e-4, rtol=1e-4)


def test_pool_matches_explicit_block_loops():
    model = _tiny()
    feats = torch.randn(2, 513, 32)
    got = model.pool(feats).numpy()
    f = feats.numpy()
    want = np.zeros((2, 8, 32), np.float32)
    for bi in range(2):
        for j in range(8):  # token j: time patches 8j..8j+7, all 8 frequency patches
            block = np.stack([f[bi, 1 + t * 8 + q] for t in range(8 * j, 8 * j + 8) for q in range(8)])  # (64, C)
            want[bi, j] = (block.mean(axis=0) + block.max(axis=0)) / 2
    assert got.shape == (2, 8, 32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_feature_is_mean_of_norm_over_feature_layers_via_hooks():
    model = _tiny(seed=5)
    assert model.cfg.feature_layers == (1, 2, 3)
    outs = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o)) for k, blk in enumerate(model.blocks)]
    x = torch.randn(2, 1, 1024, 128)
    with torch.inference_mode():
        feats = model.features(x)
        want = torch.stack([model.norm(outs[k]) for k in (1, 2, 3)]).mean(0)
        last_only = model.norm(outs[3])
        pooled = model(x)
    for h in hooks:
        h.remove()
    assert feats.shape == (2, 513, 32)
    torch.testing.assert_close(feats, want)
    assert not torch.allclose(feats, last_only)
    torch.testing.assert_close(pooled, model.pool(want))
    assert am.AudioMAEConfig.full().feature_layers == (9, 10, 11)


# ----------------------------------------------------------------------------------------- build / load


def _clips(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    sig = _signals(am.CLIP_SAMPLES)
    audio = torch.from_numpy(np.stack([sig["recording"], sig["chirp"]][:b])).float()
    audio[1, 120000:] = 0
    return audio, torch.tensor([am.CLIP_SAMPLES, 120000][:b])


def test_tiny_build_encode_shapes_info_and_determinism():
    enc = am.build({"model": "tiny", "seed": 3})
    audio, lengths = _clips()
    out = enc.encode(audio, lengths)
    assert out.shape == (2, 8, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert enc.info.name == "audiomae" and enc.info.input_kind == "audio"
    assert enc.info.output_shape == (8, 32) and enc.info.checkpoint == {"tiny_seed": 3}
    assert enc.info.config["feature_layers"] == (1, 2, 3)
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training
    assert torch.equal(out, enc.encode(audio, lengths))
    assert torch.equal(out, am.build({"model": "tiny", "seed": 3}).encode(audio, lengths))
    assert not torch.allclose(out, am.build({"model": "tiny", "seed": 4}).encode(audio, lengths))
    with pytest.raises(ValueError, match="lengths"):
        enc.encode(audio, torch.tensor([1, am.CLIP_SAMPLES + 1]))
    with pytest.raises(ValueError, match="160000"):
        enc.encode(audio[:, :1000], lengths)


def _decoder_keys() -> dict[str, torch.Tensor]:
    return {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.zeros(16, 32),
            "decoder_pos_embed": torch.zeros(1, 513, 16), "decoder_blocks.0.norm1.weight": torch.ones(16),
            "decoder_norm.weight": torch.ones(16), "decoder_pred.weight": torch.zeros(256, 16)}


@pytest.mark.parametrize("fmt", ["audioldm2-full", "standalone"])
def test_tiny_checkpoints_in_released_formats_reproduce_the_source(tmp_path, fmt):
    source = am.build({"model": "tiny", "seed": 7})
    weights = {**source.model.state_dict(), **_decoder_keys()}
    if fmt == "audioldm2-full":
        sd = {am.FULL_PREFIX + k: v for k, v in weights.items()}
        sd.update({"model.diffusion_model.out.0.weight": torch.ones(4),
                   "cond_stage_models.0.cond_stage_models.1.model.shared.weight": torch.zeros(3, 2),
                   "cond_stage_models.0.model.h.0.ln_1.weight": torch.ones(8)})
        blob = {"state_dict": sd, "epoch": 3, "global_step": 10}
    else:
        blob = {"model": weights, "epoch": 32}
    path = tmp_path / "ckpt.pth"
    torch.save(blob, path)
    loaded = am.build({"model": "tiny", "checkpoint": str(path)})
    audio, lengths = _clips()
    assert torch.equal(loaded.encode(audio, lengths), source.encode(audio, lengths))
    assert loaded.info.checkpoint["size"] == path.stat().st_size and "path" in loaded.info.checkpoint


def test_unexpected_key_under_prefix_is_reported_and_missing_key_raises(tmp_path, caplog):
    sd = {am.FULL_PREFIX + k: v for k, v in _tiny().state_dict().items()}
    sd[am.FULL_PREFIX + "fc_norm.weight"] = torch.ones(32)
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": sd}, path)
    with caplog.at_level(logging.INFO):
        am.build({"model": "tiny", "checkpoint": str(path)})
    assert "fc_norm.weight" in caplog.text and "unexpected" in caplog.text
    del sd[am.FULL_PREFIX + "blocks.2.attn.qkv.weight"]
    torch.save({"state_dict": sd}, path)
    with pytest.raises(RuntimeError, match="blocks.2.attn.qkv.weight"):
        am.build({"model": "tiny", "checkpoint": str(path)})
    torch.save({"state_dict": {"model.x": torch.ones(1)}}, path)
    with pytest.raises(RuntimeError, match="no AudioMAE weights"):
        am.build({"model": "tiny", "checkpoint": str(path)})


def test_build_rejects_bad_params(tmp_path):
    with pytest.raises(ValueError, match="needs 'checkpoint'"):
        am.build({"model": "full"})
    with pytest.raises(ValueError, match="full' or 'tiny"):
        am.build({"model": "huge"})
    with pytest.raises(ValueError, match="half"):
        am.build({"model": "tiny", "half": True}, device="cpu")
    with pytest.raises(FileNotFoundError):
        am.build({"model": "full", "checkpoint": str(tmp_path / "missing.pth")})
    with pytest.raises(ValueError, match="feature_layers"):
        am.build({"model": "tiny", "feature_layers": [4]})
