"""frozen/resample.py against an independent float64 evaluation of the windowed-sinc formula, and known signals."""

import math

import numpy as np
import pytest
import torch

from audio_reference import windowed_sinc
from frozen.resample import Resample, resample, resample_like_transform, sinc_kernel

RATES = [8000, 16000, 22050, 32000, 44100, 48000]


def _formula(x, orig, new, **kw):
    return windowed_sinc(x, orig, new, **kw)


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.3


@pytest.mark.parametrize("orig", RATES)
@pytest.mark.parametrize("new", [16000, 32000])
def test_matches_the_formula(orig, new):
    if orig == new:
        return
    n_in = int(orig * 0.05) + 7  # 50 ms and a ragged end
    x = _noise(n_in, seed=orig)
    ref = _formula(x, orig, new)
    # torchaudio's float32 rounding of the tap positions (b * t, b up to ~320 at 22.05 kHz) moves the result by up
    # to ~2e-5 from the exact formula: the transform only through its float32 phase offsets (reproduced in the
    # reference: then it agrees to float32 rounding), the functional form through its all-float32 kernel
    trans = Resample(orig, new)(torch.from_numpy(x))
    func = resample(torch.from_numpy(x), orig, new)
    for out in (trans, func):
        assert out.dtype == torch.float32 and out.shape == (math.ceil(new * n_in / orig),)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(trans.numpy(), _formula(x, orig, new, f32_phase=True), atol=2e-6, rtol=0)


def test_identity_and_shapes():
    x = torch.from_numpy(_noise(4410))
    assert resample(x, 16000, 16000) is x and Resample(16000, 16000)(x) is x
    batch = torch.stack([x, 2 * x, -x]).reshape(3, 1, -1)  # (3, 1, N)
    out = resample(batch, 44100, 16000)
    assert out.shape == (3, 1, 1600)
    torch.testing.assert_close(out[1, 0], 2 * resample(x, 44100, 16000), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 44100.5, 16000)
    with pytest.raises(TypeError, match="floating point"):
        resample(torch.zeros(100, dtype=torch.int16), 32000, 16000)


def test_kernel_precision_modes():
    """functional: kernel in the waveform's dtype; transform: float64 maths stored as float32. Both are the same
    filter to float32 rounding, and the float64 kernel is the formula itself."""
    k32, w32 = sinc_kernel(44100, 16000, dtype=torch.float32)
    k64, w64 = sinc_kernel(44100, 16000, dtype=torch.float64)
    kt, wt = sinc_kernel(44100, 16000)
    assert w32 == w64 == wt == 17 and k32.shape == kt.shape == (160, 1, 2 * 17 + 441)
    assert kt.dtype == torch.float32 and k64.dtype == torch.float64
    torch.testing.assert_close(k32.double(), k64, atol=2e-5, rtol=0)
    o, n, b = 441, 160, 0.99 * 160
    t = np.arange(-17, 17 + o)[None, :] / o - (np.arange(n)[:, None] / n).astype(np.float32)  # float32 phases
    u = np.clip(b * t, -6, 6)
    np.testing.assert_allclose(kt[:, 0].double().numpy(), (b / o) * np.sinc(u) * np.cos(np.pi * u / 12) ** 2,
                               atol=1e-7)
    t = np.arange(-17, 17 + o)[None, :] / o - np.arange(n)[:, None] / n
    u = np.clip(b * t, -6, 6)
    ref = (b / o) * np.sinc(u) * np.cos(np.pi * u / 12) ** 2
    np.testing.assert_allclose(k64[:, 0].numpy(), ref, atol=1e-15)


@pytest.mark.parametrize("orig", [8000, 22050, 32000, 44100, 48000])
def test_known_signals(orig):
    """DC stays DC, a 1 kHz tone keeps its amplitude and phase, a tone above the new Nyquist is removed."""
    new = 16000
    sec = 0.5
    ti = np.arange(int(orig * sec)) / orig
    to = np.arange(math.ceil(new * len(ti) / orig)) / new
    inner = slice(200, len(to) - 200)  # away from the zero-padded edges
    dc = resample_like_transform(torch.ones(len(ti)), orig, new).numpy()
    np.testing.assert_allclose(dc[inner], 1.0, atol=2e-3)
    tone = resample(torch.from_numpy(np.sin(2 * np.pi * 1000 * ti).astype(np.float32)), orig, new).numpy()
    np.testing.assert_allclose(tone[inner], np.sin(2 * np.pi * 1000 * to)[inner], atol=3e-3)
    if orig > 2 * 10500:
        high = np.sin(2 * np.pi * 10500 * ti).astype(np.float32)  # above 8 kHz: would alias to 5.5 kHz
        out = resample(torch.from_numpy(high), orig, new).numpy()
        assert np.sqrt(np.mean(out[inner] ** 2)) < 6e-3  # rms 0.707 -> < 0.006 (the Hann-sinc's stop band)
    if orig < new:  # upsampling: nothing new appears above the old Nyquist
        up = resample(torch.from_numpy(_noise(len(ti))), orig, new).numpy()
        spec = np.abs(np.fft.rfft(up)) ** 2
        f = np.fft.rfftfreq(len(up), 1 / new)
        assert spec[f > orig / 2 * 1.2].sum() < 1e-4 * spec.sum()


@pytest.mark.parametrize("orig, new", [(44100, 16000), (48000, 16000), (22050, 16000), (11025, 16000),
                                       (8000, 16000), (32000, 16000), (16000, 32000)])
def test_numpy_resampler_matches_torch(orig, new):
    """frozen/resample_np.py (the frames stage's, no torch) against frozen/resample.py: same kernel maths in
    float32, a matrix product instead of conv1d; equal to float32 rounding, same length."""
    from frozen.resample_np import resample as resample_np

    for n in (orig * 2 + 7, 1, orig // 3):
        x = _noise(n, seed=n)
        want = resample(torch.from_numpy(x), orig, new).numpy()
        got = resample_np(x, orig, new)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    x = _noise(1000)
    assert resample_np(x, 16000, 16000) is not None and np.array_equal(resample_np(x, 16000, 16000), x)
    np.testing.assert_allclose(resample_np(x, orig, new), _formula(x, orig, new), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="positive integers"):
        resample_np(x, 0, 16000)


@pytest.mark.parametrize("orig, new", [(44100, 16000), (32000, 16000), (48000, 16000), (22050, 16000),
                                       (8000, 16000), (16000, 16000)])
def test_input_needed_is_all_the_first_outputs_read(orig, new):
    """The first N outputs of a long signal's resampling come from its first input_needed(N) samples: the frames
    stage decodes only that much of a stream and still stores what resampling the whole stream gives."""
    from frozen.resample_np import input_needed, resample as resample_np

    x = _noise(orig * 3 + 11, seed=orig)  # 3 s of noise
    whole = resample(torch.from_numpy(x), orig, new).numpy()  # the torch resampler, independent of the numpy one
    for n_out in (new * 2, new * 2 - 1, 1, 17):
        m = input_needed(n_out, orig, new)
        assert n_out * orig / new <= m < n_out * orig / new + 2 * orig  # the clip plus the filter's reach
        got = resample_np(x[:m], orig, new)
        assert got.shape[0] >= n_out
        np.testing.assert_allclose(got[:n_out], whole[:n_out], atol=1e-6, rtol=0)
        if orig != new:  # cutting at the clip's length in input samples (the old order) changes the last outputs
            cut = resample_np(x[: math.ceil(n_out * orig / new)], orig, new)
            assert np.abs(cut[:n_out] - whole[:n_out]).max() > 1e-3
    assert input_needed(0, orig, new) == 0
