"""Per-clip outputs: wav, the source video with the generated soundtrack muxed in, the spectrogram PNG, the 8 s crop."""

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infer.media_out import AUDIO_CODECS, CONTAINERS, crop_audio, mux_audio, video_span, write_wav
from pipeline.spectrogram import log_mel, write_spectrogram_png

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


def test_spectrogram_png(tmp_path):
    t = np.arange(int(2.0 * SR)) / SR
    generated = 0.3 * np.sin(2 * np.pi * 1000 * t)
    size = write_spectrogram_png(tmp_path / "both.png", generated, 0.3 * np.sin(2 * np.pi * 250 * t), title="dog")
    with Image.open(tmp_path / "both.png") as img:
        assert img.size == size == (800, 22 + 2 * 190 - 30 + 40)
        pixels = np.asarray(img.convert("RGB"))
    assert pixels[22:182, 64:784].std() > 10  # the panel is drawn, not blank
    assert write_spectrogram_png(tmp_path / "one.png", generated) == (800, 22 + 160 + 40)
    mel = log_mel(generated)
    assert mel.shape == (64, 1 + len(generated) // 160)
    hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 66)[1:-1] / 2595) - 1)
    assert abs(hz[mel[:, 50].argmax()] - 1000) < 120  # the loudest band is the tone's
