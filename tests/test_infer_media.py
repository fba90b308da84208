"""Per-clip outputs: wav, the source video with the generated soundtrack muxed in, the spectrogram PNG, the 8 s crop."""

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infer.media_out import AUDIO_CODECS, CONTAINERS, crop_audio, mux_audio, video_span, write_wav
import pipeline.spectrogram as S
from pipeline.spectrogram import (is_silent, level_text, log_mel, log_mel_dbfs, mel_filterbank, peak_dbfs,
                                  write_spectrogram_png)

SR = 16000
FPS, SECONDS, TONE = 10, 1.5, 300.0
# extension -> (video codec, original audio codec) of the synthetic source clip
DECODED_AS = {"aac": "aac", "libopus": "opus", "pcm_s16le": "pcm_s16le"}  # encoder -> decoder name
SOURCES = {".mp4": ("libx264", "aac"), ".mkv": ("libx264", "aac"), ".webm": ("libvpx", "libopus"),
           ".avi": ("mpeg4", "libmp3lame")}


def _make_clip(path, vcodec, acodec):
    """64x48 clip, SECONDS at FPS, with a stereo 440 Hz original soundtrack (which muxing must drop)."""
    with av.open(str(path), "w", format=CONTAINERS[path.suffix]) as c:
        v = c.add_stream(vcodec, rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream(acodec, rate=48000, layout="stereo")
        for i in range(int(SECONDS * FPS)):
            img = np.full((48, 64, 3), i * 15, np.uint8)
            img[:, i * 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        n, fs = int(SECONDS * 48000), a.codec_context.frame_size or 1024
        x = np.repeat((0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32), 2)
        for k in range(0, n, fs):
            frame = av.AudioFrame.from_ndarray(x[None, 2 * k: 2 * (k + fs)], format="flt", layout="stereo")
            frame.sample_rate, frame.pts = 48000, k
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)


def _video_packets(path):
    with av.open(str(path)) as c:
        return [(bytes(p), float(p.pts * p.time_base), p.is_keyframe) for p in c.demux(video=0) if p.size]


@pytest.mark.parametrize("ext", list(SOURCES))
def test_mux_copies_video_and_replaces_audio(tmp_path, ext):
    src, out = tmp_path / f"src{ext}", tmp_path / f"out{ext}"
    _make_clip(src, *SOURCES[ext])
    audio = (0.25 * np.sin(2 * np.pi * TONE * np.arange(int(10.24 * SR)) / SR)).astype(np.float32)
    info = mux_audio(src, audio, out)

    assert _video_packets(out) == _video_packets(src)  # payload bytes, times and keyframes unchanged
    start, end = video_span(src)
    assert info["video_duration"] == pytest.approx(end - start) and end - start == pytest.approx(SECONDS, abs=0.11)
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]  # the original soundtrack is gone
        stream = c.streams.audio[0]
        assert stream.codec_context.name == DECODED_AS[AUDIO_CODECS[CONTAINERS[ext]]]
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(stream)])
        rate, frame_size = stream.codec_context.sample_rate, stream.codec_context.frame_size or 1
    assert abs(len(decoded) / rate - (end - start)) <= max(frame_size, 1) / rate + 1e-6
    spectrum = np.abs(np.fft.rfft(decoded[len(decoded) // 4: 3 * len(decoded) // 4]))
    peak_hz = np.argmax(spectrum) * rate / (2 * (len(spectrum) - 1))
    assert peak_hz == pytest.approx(TONE, abs=15)  # the generated tone, not the original 440 Hz


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_mux_cuts_the_video_to_seconds(tmp_path, ext):
    """``--duration``: the written video holds the frames shown in the first ``seconds`` and no later one (no
    B-frames here: the cut is exact), with the sound cut to the same span."""
    src, out = tmp_path / f"src{ext}", tmp_path / f"out{ext}"
    _make_clip(src, *SOURCES[ext])
    audio = (0.25 * np.sin(2 * np.pi * TONE * np.arange(int(10.24 * SR)) / SR)).astype(np.float32)
    info = mux_audio(src, audio, out, seconds=0.75)
    kept = [p for p in _video_packets(src) if p[1] < 0.75 - 1e-6]
    assert len(kept) == round(0.75 * FPS) and _video_packets(out) == kept  # the first frames, bytes unchanged
    start, end = video_span(out)
    assert (start, end) == pytest.approx((0.0, 0.8), abs=1e-6) and info["video_duration"] == pytest.approx(0.75)
    assert info["audio_seconds"] == pytest.approx(0.75)
    with av.open(str(out)) as c:
        n_frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(out)) as c:
        stream = c.streams.audio[0]
        decoded = sum(f.samples for f in c.decode(stream))
        rate, frame_size = stream.codec_context.sample_rate, stream.codec_context.frame_size or 1
    assert n_frames == len(kept)  # every kept frame decodes
    assert abs(decoded / rate - 0.75) <= frame_size / rate + 1e-6
    whole = mux_audio(src, audio, tmp_path / f"all{ext}", seconds=99)  # longer than the video: all of it
    assert _video_packets(tmp_path / f"all{ext}") == _video_packets(src)
    assert whole["video_duration"] == pytest.approx(np.subtract(*video_span(src)[::-1]))
    with pytest.raises(ValueError, match="positive"):
        mux_audio(src, audio, tmp_path / f"bad{ext}", seconds=0)


def test_mux_short_audio_and_bad_extension(tmp_path):
    src = tmp_path / "src.mp4"
    _make_clip(src, *SOURCES[".mp4"])
    info = mux_audio(src, np.zeros(SR // 2, np.float32), tmp_path / "out.mp4")
    assert info["audio_seconds"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="extensions"):
        mux_audio(src, np.zeros(SR, np.float32), tmp_path / "out.flv")
    assert not (tmp_path / "out.flv").exists()


def test_wav_round_trip_and_clipping(tmp_path):
    audio = np.linspace(-0.9, 0.9, SR, dtype=np.float32)
    write_wav(tmp_path / "a.wav", audio)
    back, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == SR and back.shape == audio.shape
    np.testing.assert_allclose(back, audio, atol=1.0 / 32768 + 1e-7)
    write_wav(tmp_path / "b.wav", audio * 2)
    assert np.abs(sf.read(tmp_path / "b.wav")[0]).max() <= 1.0
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "c.wav", np.full(10, np.nan, np.float32))
    assert not (tmp_path / "c.wav").exists()


def test_crop_to_eight_seconds():
    batch = np.ones((2, int(10.24 * SR)), np.float32)
    assert crop_audio(batch).shape == (2, 8 * SR)
    assert crop_audio(batch[0], None).shape == (int(10.24 * SR),)
    assert crop_audio(np.ones(3 * SR)).shape == (3 * SR,)
    with pytest.raises(ValueError):
        crop_audio(batch, 0)


# layout of pipeline.spectrogram: the first panel, the second one below it, the colour bar's column
PANEL = (slice(S.TOP, S.TOP + S.PANEL_H), slice(S.LEFT, 800 - S.RIGHT))
PANEL2 = (slice(S.TOP + S.PANEL_H + S.GAP, S.TOP + 2 * S.PANEL_H + S.GAP), PANEL[1])
BAR_X = 800 - S.RIGHT + 10 + S.BAR_W // 2


def test_spectrogram_png(tmp_path):
    t = np.arange(int(2.0 * SR)) / SR
    generated = 0.3 * np.sin(2 * np.pi * 1000 * t)
    size = write_spectrogram_png(tmp_path / "both.png", generated, 0.3 * np.sin(2 * np.pi * 250 * t), title="dog")
    with Image.open(tmp_path / "both.png") as img:
        assert img.size == size == (800, S.TOP + 2 * S.PANEL_H + S.GAP + S.BOTTOM)
        pixels = np.asarray(img.convert("RGB"))
    assert pixels[PANEL].std() > 10  # the panel is drawn, not blank
    assert write_spectrogram_png(tmp_path / "one.png", generated) == (800, S.TOP + S.PANEL_H + S.BOTTOM)
    mel = log_mel(generated)
    assert mel.shape == (64, 1 + len(generated) // 160)
    hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 66)[1:-1] / 2595) - 1)
    assert abs(hz[mel[:, 50].argmax()] - 1000) < 120  # the loudest band is the tone's


def test_dbfs_scale_is_absolute():
    """A sine on bin k0 of the 1024-point periodic Hann DFT has |X| = A*256 at k0 and A*128 at k0 +- 1 (any phase):
    its band's level in dBFS is 10 log10(fb[k0] + (fb[k0-1] + fb[k0+1]) / 4) + 20 log10(A)."""
    k0 = 64  # 1 kHz at 16 kHz / 1024
    t = np.arange(2 * SR) / SR
    fb = mel_filterbank()  # (64, 513)
    expected = 10 * np.log10((fb[:, k0] + (fb[:, k0 - 1] + fb[:, k0 + 1]) / 4).max())
    for amp in (1.0, 0.01, 3e-5):
        got = log_mel_dbfs(amp * np.sin(2 * np.pi * 1000 * t + 0.3))[:, 20:-20].max(axis=0)  # (frames,)
        np.testing.assert_allclose(got, expected + 20 * np.log10(amp), atol=1e-6)
    assert -1.0 < expected < 2.0  # a full-scale sine reads about 0 dBFS


def test_peak_level_and_silence():
    assert peak_dbfs(np.array([0.0, -0.5, 0.25])) == pytest.approx(-6.0206, abs=1e-4)
    assert peak_dbfs(np.full(10, 3e-5)) == pytest.approx(-90.458, abs=1e-3)
    assert peak_dbfs(np.zeros(5)) == -np.inf and peak_dbfs(None) == -np.inf
    assert is_silent(np.full(10, 9.9e-4)) and not is_silent(np.full(10, 1.01e-3))  # -60 dBFS = 1e-3
    assert level_text(np.full(10, 3e-5)) == "peak -90.5 dBFS: SILENT"
    assert level_text(np.array([0.5])) == "peak -6.0 dBFS" and level_text(np.zeros(3)) == "peak -inf dBFS: SILENT"


def test_panels_share_the_absolute_scale(tmp_path):
    """The generated panel's pixels do not depend on what it is drawn with; a sound 60 dB quieter is drawn darker;
    the colour bar runs from the top colour (0 dBFS) to the bottom one (-100)."""
    t = np.arange(SR) / SR
    loud = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_spectrogram_png(tmp_path / "alone.png", loud / 1000, None)
    write_spectrogram_png(tmp_path / "pair.png", loud / 1000, loud)
    with Image.open(tmp_path / "alone.png") as a, Image.open(tmp_path / "pair.png") as b:
        alone, pair = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    np.testing.assert_array_equal(alone[PANEL], pair[PANEL])
    lum = pair.astype(float).mean(axis=2)
    assert lum[PANEL2].max() > lum[PANEL].max() + 60  # the loud tone's band is bright, the quiet one's is not
    top, bottom = S.TOP, PANEL2[0].stop - 1  # the bar is as tall as the panels
    assert tuple(pair[top, BAR_X]) == (252, 253, 191) and tuple(pair[bottom, BAR_X]) == (0, 0, 4)
