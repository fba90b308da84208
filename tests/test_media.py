"""pipeline.media on small synthetic fixtures (pipeline.demo_data) with their exact metadata asserted."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.demo_data import CLASSES, ClipSpec, make_demo_clips, pack_webdataset, write_clip
from pipeline.media import DecodedClip, MediaError, decode_clip, probe

FPS = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_demo_clips(out, n=8, seed=0)


@pytest.fixture(scope="module")
def decoded(demo) -> dict[str, DecodedClip]:
    return {s.id: decode_clip(s.path) for s in demo}


def _bright(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (T,) bool: the flashing square is on (bright pixels cover > 3% of the frame)."""
    return (frames.max(axis=-1) > 150).mean(axis=(1, 2)) > 0.03


def _expected_bright(spec: ClipSpec, n: int) -> np.ndarray:
    """Flash state of the frame displayed at t_i = i / 4: source frame floor(i * fps / 4) (exact integers)."""
    shown = [i * spec.fps // FPS for i in range(n)]
    on = set()
    for e in spec.events:
        k = int(round(e * spec.fps))
        on.update(range(k, k + int(round(spec.flash * spec.fps))))
    return np.array([j in on for j in shown])


def test_demo_set_layout(demo):
    assert len(demo) == 8
    assert sorted({s.duration for s in demo}) == [3.0, 10.0, 14.0]
    assert sorted({s.ext for s in demo}) == ["mkv", "mp4", "webm"]
    assert [s.has_audio for s in demo].count(False) == 1
    assert {s.split for s in demo} == {"train", "val", "test"}
    assert {s.label for s in demo} == {c[0] for c in CLASSES}
    for s in demo:
        assert s.path.endswith(f"{s.youtube_id}_{s.start:06d}.{s.ext}")
    csv_path = Path(demo[0].path).parent / "labels.csv"
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    assert rows == [[s.youtube_id, str(s.start), s.label, s.split] for s in demo]  # no header, VGGSound order


def test_exact_metadata(demo, decoded):
    for s in demo:
        d = decoded[s.id]
        assert d.frames.shape == (40, 224, 224, 3) and d.frames.dtype == np.uint8
        assert d.audio.shape == (160_000,) and d.audio.dtype == np.float32
        assert d.n_frames == {3.0: 12, 10.0: 40, 14.0: 40}[s.duration], s.id
        assert not d.frames[d.n_frames:].any()
        assert d.frames[: d.n_frames].reshape(d.n_frames, -1).any(axis=1).all()
        assert d.native_fps == 25.0
        assert (d.width, d.height) == (160, 120)
        assert d.duration == pytest.approx(s.duration, abs=0.05)
        assert d.video_codec == ("vp9" if s.ext == "webm" else "h264")
        assert d.has_audio == s.has_audio
        assert d.audio_silent == (not s.has_audio)
        if not s.has_audio:
            assert d.audio_len == 0 and not d.audio.any()
        elif s.duration >= 10:
            assert d.audio_len == 160_000
        else:  # 3 s of audio + at most one codec frame of end padding
            assert 48_000 <= d.audio_len <= 48_000 + 1024 * 16_000 // s.audio_rate + 1, d.audio_len
            assert not d.audio[d.audio_len:].any()
        assert np.abs(d.audio).max() <= 1.0
        assert d.frame_times == sorted(d.frame_times)


def test_flash_frames_follow_the_timestamp_rule(demo, decoded):
    for s in demo:
        d = decoded[s.id]
        got = _bright(d.frames[: d.n_frames])
        assert got.any(), s.id
        np.testing.assert_array_equal(got, _expected_bright(s, d.n_frames), err_msg=s.id)


def test_sound_burst_at_the_flash(demo, decoded):
    for s in (s for s in demo if s.has_audio):
        d = decoded[s.id]
        bright = _bright(d.frames[: d.n_frames])
        for e in s.events:
            if e >= 10.0:
                continue
            lo = int(max(0.0, e - 0.3) * 16_000)
            loud = np.flatnonzero(np.abs(d.audio[lo: lo + 16_000]) > 0.05)
            onset = (lo + loud[0]) / 16_000
            assert abs(onset - e) < 0.01, (s.id, e, onset)
            first_flash = math.ceil(e * FPS)  # first sampled frame at or after the onset
            assert bright[first_flash] and abs(first_flash / FPS - onset) < 1 / FPS


def test_deterministic_decode_and_sources(demo):
    s = demo[0]
    a, b = decode_clip(s.path), decode_clip(s.path)
    data = open(s.path, "rb").read()
    c = decode_clip(io.BytesIO(data))
    for other in (b, c, decode_clip(data)):
        assert a.frames.tobytes() == other.frames.tobytes()
        assert a.audio.tobytes() == other.audio.tobytes()
        assert (a.n_frames, a.audio_len) == (other.n_frames, other.audio_len)


def test_demo_generation_is_deterministic(tmp_path):
    a = make_demo_clips(tmp_path / "a", n=2, seed=3, width=64, height=48)
    b = make_demo_clips(tmp_path / "b", n=2, seed=3, width=64, height=48)
    assert [s.id for s in a] == [s.id for s in b]
    for x, y in zip(a, b):
        assert open(x.path, "rb").read() == open(y.path, "rb").read()


def test_stereo_keeps_the_first_channel(demo, decoded):
    stereo = next(s for s in demo if s.channels == 2)
    # both channels carry the same 0.5-amplitude burst: channel 0 (AudioLDM-2's waveform[0]) keeps its level
    # (distinct channels: tests/test_frames_stage.py, the loud 5.1 clip)
    assert -8.0 < decoded[stereo.id].audio_peak_dbfs < -4.5


def test_probe(demo):
    s = next(s for s in demo if s.duration == 14.0 and s.ext == "mp4")
    p = probe(s.path)
    assert (p.width, p.height, p.native_fps, p.video_codec, p.has_video, p.has_audio) == (160, 120, 25.0, "h264",
                                                                                           True, True)
    assert p.duration == pytest.approx(14.0, abs=0.05)
    assert p.audio_sample_rate == 44_100


@pytest.mark.parametrize("ext,codec", [("mp4", "h264"), ("mkv", "h264"), ("webm", "vp9"), ("avi", "mpeg4"),
                                       ("mpeg", "mpeg2video")])
def test_containers_and_codecs(tmp_path, ext, codec):
    rate = {"webm": 48_000, "mkv": 48_000}.get(ext, 44_100)
    spec = write_clip(ClipSpec("x", 0, "red beep", "train", str(tmp_path / f"c.{ext}"), duration=10.2,
                               width=96, height=64, events=[0.48, 9.04], audio_rate=rate))
    d = decode_clip(spec.path)
    assert d.n_frames == 40 and d.frames.shape == (40, 224, 224, 3)
    assert d.video_codec == codec and d.has_audio and d.audio_len == 160_000
    np.testing.assert_array_equal(_bright(d.frames), _expected_bright(spec, 40))


def _audio_only(path):
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=16_000, layout="mono")
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 16_000), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16_000, 0
        for p in [*a.encode(fr), *a.encode()]:
            c.mux(p)


def test_broken_inputs(tmp_path):
    def reason(src, **kw):
        with pytest.raises(MediaError) as e:
            decode_clip(src, **kw)
        return e.value.reason

    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    assert reason(tmp_path / "random.mp4") == "not_a_video"
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert reason(tmp_path / "empty.mp4") == "empty_file"
    assert reason(io.BytesIO(b"")) == "empty_file"
    for ext in ("mp4", "mkv"):  # mp4: index at the end is lost; mkv: data ends before the header's duration
        full = write_clip(ClipSpec("x", 0, "red beep", "train", str(tmp_path / f"full.{ext}"), 4.0, events=[1.0],
                                   audio_rate=48_000))
        data = open(full.path, "rb").read()
        (tmp_path / f"half.{ext}").write_bytes(data[: len(data) // 2])
        assert reason(tmp_path / f"half.{ext}") == "truncated", ext
    _audio_only(tmp_path / "audio.m4a")
    assert reason(tmp_path / "audio.m4a") == "no_video_stream"
    tiny = write_clip(ClipSpec("x", 0, "red beep", "train", str(tmp_path / "tiny.mp4"), 0.2, width=8, height=8,
                               has_audio=False))
    assert reason(tiny.path) == "absurd_dimensions"
    assert reason(full.path, max_side=100) == "absurd_dimensions"
    assert reason(full.path, max_pixels=160 * 119) == "absurd_dimensions"
    with pytest.raises(FileNotFoundError):
        decode_clip(tmp_path / "missing.mp4")


def test_webdataset_shards(demo, tmp_path):
    shards = pack_webdataset(demo, tmp_path, shard_size=3)
    assert [p.name for p in shards] == ["demo-000000.tar", "demo-000001.tar", "demo-000002.tar"]
    by_id = {s.id: s for s in demo}
    seen = []
    for p in shards:
        with tarfile.open(p) as tar:
            names = tar.getnames()
            for n in names:
                key, ext = n.split(".", 1)
                s = by_id[key]
                data = tar.extractfile(n).read()
                if ext == "json":
                    assert json.loads(data) == {"label": s.label, "split": s.split, "youtube_id": s.youtube_id,
                                                "start_seconds": s.start, "class_index": s.class_index}
                elif ext == "cls":
                    assert data.decode() == s.label
                else:
                    assert ext == s.ext and data == open(s.path, "rb").read()
                    seen.append(key)
    assert seen == sorted(by_id)
    again = pack_webdataset(demo, tmp_path / "again", shard_size=3)
    assert [p.read_bytes() for p in shards] == [p.read_bytes() for p in again]


def _reference_frames(path: str, n: int, fps_src: int) -> list:
    """Independent pick: decode every frame with PyAV, take frame floor(t_i * fps_src) in display order."""
    with av.open(path) as c:
        frames = list(c.decode(video=0))
    return [frames[i * fps_src // FPS] for i in range(n)]


@pytest.mark.parametrize("resize,max_mae", [("direct", 1.0), ("via_rgb", 0.6)])
def test_resize_matches_pil_bilinear(demo, resize, max_mae):
    from av.video.reformatter import Interpolation
    from PIL import Image

    s = next(s for s in demo if s.ext == "mp4" and s.duration == 10.0)
    d = decode_clip(s.path, resize=resize)
    for i, f in enumerate(_reference_frames(s.path, 40, s.fps)):
        if resize == "direct":  # accurate full-chroma RGB at native size
            rgb = f.reformat(format="rgb24", interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND
                             | Interpolation.FULL_CHR_H_INT).to_image()
        else:
            rgb = f.to_image()
        ref = np.asarray(rgb.resize((224, 224), Image.BILINEAR), np.float32)  # torchvision Resize on PIL
        assert np.abs(d.frames[i].astype(np.float32) - ref).mean() < max_mae, (resize, i)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_audio_offset_is_reported_and_optionally_applied(tmp_path, ext):
    spec = write_clip(ClipSpec("x", 0, "red beep", "train", str(tmp_path / f"late.{ext}"), 4.0, events=[1.0, 2.6],
                               audio_rate=48_000, audio_delay=0.5))

    def onset(d: DecodedClip) -> float:
        return np.flatnonzero(np.abs(d.audio) > 0.05)[0] / 16_000

    own, aligned = decode_clip(spec.path), decode_clip(spec.path, align_audio=True)
    assert own.audio_offset == pytest.approx(0.5, abs=0.03) and aligned.audio_offset == own.audio_offset
    assert onset(own) == pytest.approx(0.5, abs=0.03)  # stream-relative: the audio's first sample is sample 0
    assert onset(aligned) == pytest.approx(1.0, abs=0.005)  # video timeline: burst under the flash
    assert aligned.audio_len == own.audio_len + round(own.audio_offset * 16_000)


def _loud_clip(path: Path, rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A 4-FPS mkv whose stereo audio is lossless float PCM at ``rate``; channel 0 loud (peak ~1.7, beyond full
    scale) and broadband up to the last sample. Returns channel 0 as written (float32)."""
    rng = np.random.default_rng(seed)
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    left = (1.2 * np.sin(2 * np.pi * 997 * t) + 0.5 * rng.standard_normal(n)).astype(np.float32)  # (n,)
    right = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=4)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        a_s = c.add_stream("pcm_f32le", rate=rate, layout="stereo")
        for i in range(int(math.ceil(seconds * 4))):
            img = np.full((32, 32, 3), (i * 7) % 256, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        data = np.stack([left, right])  # (2, n)
        for i in range(0, n, 1000):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + 1000]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = rate, i
            for p in a_s.encode(fr):
                c.mux(p)
        for p in a_s.encode():
            c.mux(p)
    return left


def _stream_channel0(path: Path) -> tuple[np.ndarray, int]:
    """The whole first audio stream's channel 0 as PyAV decodes it (independent of pipeline.media)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        parts = []
        for f in c.decode(s):
            x = f.to_ndarray()  # planar: (C, n); packed: (1, n * C) interleaved
            x = x[0] if f.format.is_planar else x.reshape(-1, len(f.layout.channels))[:, 0]
            parts.append(x.astype(np.float32))
        return np.concatenate(parts), s.codec_context.sample_rate


@pytest.mark.parametrize("rate, seconds", [(32_000, 12.5), (44_100, 10.7), (44_100, 7.3), (48_000, 10.0)])
def test_audio_is_the_resampled_stream_cut_last_samples_included(tmp_path, rate, seconds):
    """AudioLDM-2's reading: load the whole stream, resample it to 16 kHz (torchaudio's functional.resample:
    frozen/resample.py, torch), channel 0, cut or zero-pad to 10 s. Every stored sample equals it to float32
    rounding, the last ones too (cutting at the source rate first left zeros in the filter's reach there)."""
    import torch

    from frozen.resample import resample

    written = _loud_clip(tmp_path / "loud.mkv", rate, seconds)
    stream, got_rate = _stream_channel0(tmp_path / "loud.mkv")
    assert got_rate == rate and np.array_equal(stream[: written.size], written)  # lossless: the stream is what we wrote
    whole = resample(torch.from_numpy(stream), rate, 16_000).numpy()  # (ceil(16000 n / rate),)
    want = np.zeros(160_000, np.float32)
    want[: min(whole.size, 160_000)] = whole[:160_000]

    d = decode_clip(str(tmp_path / "loud.mkv"))
    assert d.audio_len == min(whole.size, 160_000) and d.audio_peak_dbfs > 3.0  # loud: beyond full scale, kept
    np.testing.assert_allclose(d.audio, want, atol=2e-6, rtol=0)
    np.testing.assert_allclose(d.audio[-8:], want[-8:], atol=2e-6, rtol=0)
    if whole.size > 160_000:  # the old order (cut at the source rate, then resample) is off at the end
        old = resample(torch.from_numpy(stream[: int(rate * 10)]), rate, 16_000).numpy()[:160_000]
        assert np.abs(old[-4:] - want[-4:]).max() > 1e-3
    else:  # zeros only after the stream's real end
        assert not d.audio[d.audio_len:].any() and d.audio_len == math.ceil(16_000 * stream.size / rate)
