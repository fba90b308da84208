"""Every metric's input prepared as av-benchmark prepares it (scoring/audio.py, ib_score.py, desync.py), checked
against the resampling formula evaluated independently (tests/audio_reference.py) on multi-channel files."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_reference import windowed_sinc
from frozen.audio import FbankConfig, fbank
from scoring.audio import ClipAudio, read_audio
from scoring.ib_score import audio_clips, clip_timepoints
from scoring.video_input import resize_short_side_uint8, resized_size

RATE = 44_100


@pytest.fixture(scope="module")
def stereo_file(tmp_path_factory):
    """10 s of 44.1 kHz stereo: different tones per channel, a 12 kHz component, a DC offset on channel 0."""
    t = np.arange(10 * RATE) / RATE
    rng = np.random.default_rng(0)
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 12_000 * t) + 0.1
    right = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.05 * rng.standard_normal(t.size)
    x = np.stack([left, right], axis=1).astype(np.float32)  # (N, 2)
    path = tmp_path_factory.mktemp("audio") / "gt.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    return path, x.T.copy()  # (2, N)


def test_read_audio_keeps_every_channel_at_the_file_rate(stereo_file):
    path, src = stereo_file
    ch, sr = read_audio(path)
    assert sr == RATE and ch.shape == src.shape and ch.dtype == np.float32
    np.testing.assert_array_equal(ch, src)


def test_panns_vggish_input_is_mono_mean_dc_removed_then_resampled(stereo_file):
    """av-benchmark AudioDataset: mean over channels, minus the whole file's mean, Resample to 16 kHz, first 8 s."""
    path, src = stereo_file
    x = ClipAudio.from_source(path).av_input(16_000, 8.0)
    assert x.shape == (128_000,) and x.dtype == np.float32
    mono = src.astype(np.float64).mean(0)
    mono -= mono.mean()
    js = np.r_[0:30, 64_000:64_030, 127_970:128_000]
    np.testing.assert_allclose(x[js], windowed_sinc(mono, RATE, 16_000, js, f32_phase=True), atol=3e-6, rtol=0)
    assert abs(float(x[1000:-1000].mean())) < 1e-3  # the 0.1 offset of channel 0 is gone


def test_passt_reads_the_file_again_at_32k(stereo_file):
    """32 kHz from the file keeps the 12 kHz tone (a 16 kHz intermediate would have removed it)."""
    path, _ = stereo_file
    clip = ClipAudio.from_source(path)
    x = clip.av_input(32_000, 8.0)
    assert x.shape == (256_000,)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / 32_000)
    at = lambda hz: spec[np.argmin(np.abs(f - hz))]  # noqa: E731
    assert at(12_000) > 0.1 * at(440) > 0
    via16 = ClipAudio(clip.av_input(16_000, 8.0)[None], 16_000).av_input(32_000, 8.0)
    spec16 = np.abs(np.fft.rfft(via16 * np.hanning(len(via16))))
    assert spec16[np.argmin(np.abs(f - 12_000))] < 1e-3 * at(12_000)


def test_synchformer_input_keeps_dc_and_needs_8s(stereo_file):
    path, src = stereo_file
    clip = ClipAudio.from_source(path)
    x = clip.sync_input(8.0)
    assert x.shape == (128_000,)
    js = np.r_[5_000:5_020]
    np.testing.assert_allclose(x[js], windowed_sinc(src.astype(np.float64).mean(0), RATE, 16_000, js,
                                                    f32_phase=True), atol=3e-6, rtol=0)
    assert float(x[1000:-1000].mean()) == pytest.approx(0.05, abs=2e-3)  # no DC removal: half of channel 0's 0.1
    short = ClipAudio(src[:, : 7 * RATE], RATE)
    assert short.sync_input(8.0).shape == (112_000,)  # the scorer then rejects it (fewer than 8 s)


def test_imagebind_input_whole_file_all_channels_then_channel_0(stereo_file):
    """functional.resample of every channel; clips at 0/4/8 s over the whole 10 s; each clip minus its mean over
    both channels; the fbank of channel 0."""
    path, src = stereo_file
    clip = ClipAudio.from_source(path)
    wav = clip.ib_input()
    assert wav.shape == (2, 160_000) and wav.dtype == np.float32
    js = np.r_[80_000:80_020]
    np.testing.assert_allclose(wav[1, js], windowed_sinc(src[1].astype(np.float64), RATE, 16_000, js), atol=1e-4)
    assert [(float(a), float(b)) for a, b in clip_timepoints(10.0)] == [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]
    clips = audio_clips(wav)
    assert clips.shape == (3, 1, 128, 204)
    seg = torch.from_numpy(wav[:, 128_000:160_000].copy())  # the third clip, 8-10 s
    seg -= seg.mean()  # over both channels
    ref = fbank(seg[:1], FbankConfig(num_mel_bins=128))[0].T  # (128, 198)
    from frozen.imagebind import AUDIO_MEAN, AUDIO_STD

    torch.testing.assert_close(clips[2, 0, :, :198], (ref - AUDIO_MEAN) / AUDIO_STD, rtol=0, atol=1e-5)
    mono_centred = torch.from_numpy(wav.mean(0)[None, 128_000:160_000].copy())
    mono_centred -= mono_centred.mean()
    other = fbank(mono_centred, FbankConfig(num_mel_bins=128))[0].T
    assert (clips[2, 0, :, :198] - (other - AUDIO_MEAN) / AUDIO_STD).abs().max() > 0.1  # not a mixdown


def test_frames_are_resized_as_uint8_like_torchvision():
    assert resized_size(120, 160, 224) == (224, 298) and resized_size(640, 360, 224) == (398, 224)
    same = np.random.default_rng(0).integers(0, 256, (2, 3, 224, 300), dtype=np.uint8)
    x = torch.from_numpy(same)
    assert resize_short_side_uint8(x, 224) is x  # already at size: untouched, as torchvision
    flat = torch.full((1, 3, 90, 120), 77, dtype=torch.uint8)
    out = resize_short_side_uint8(flat, 224)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 224, 298) and torch.all(out == 77)
    ramp = torch.linspace(0, 255, 160).round().to(torch.uint8).expand(1, 3, 120, 160).contiguous()
    out = resize_short_side_uint8(ramp, 224).int()
    flt = torch.nn.functional.interpolate(ramp.float(), size=(224, 298), mode="bicubic", antialias=True)
    assert (out - flt.clamp(0, 255).round().int()).abs().max() <= 1  # smooth content: within a grey level
    with pytest.raises(ValueError, match="uint8"):
        resize_short_side_uint8(ramp.float(), 224)
