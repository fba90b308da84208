"""ImageBind port for the IB-score: released key names, checkpoint loading, av-benchmark preprocessing, scorer."""

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from frozen import imagebind as net
from scoring import ib_score as ib
from scoring.embedders import build_embedders
from scoring.run import build_video_scorers, run
from scoring.params import EvalParams

SR = 16000


def _write_video(path: Path, seconds: float = 4.5, fps: int = 4, size=(48, 64), seed: int = 0) -> Path:
    """A small mpeg4 video whose frame i has brightness 20 + 3 i plus a seeded texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]), indexing="ij")
    texture = 60 * (yy[..., None] * rng.random(3) + xx[..., None] * rng.random(3)) / 2  # smooth: codes well
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.bit_rate = 2_000_000
        for i in range(int(seconds * fps)):
            img = np.clip(20 + 3 * i + texture, 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _wave(seconds: float = 8.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size) + 0.02).astype(np.float32)


# ----------------------------------------------------------------------------------------- network


def test_full_config_keys_and_shapes_match_released_checkpoint(meta_keys, reference_keys):
    with torch.device("meta"):
        model = net.ImageBind(net.ImageBindConfig())
    got = meta_keys(lambda: model)
    assert got == reference_keys("imagebind_keys")
    assert len(got) == 569
    v, a = 1280, 768
    blk = lambda d: 4 * d * d + 4 * d + 8 * d * d + 5 * d + 4 * d  # noqa: E731  attn, mlp, two norms
    vision = v * 3 * 2 * 14 * 14 + 257 * v + v + 2 * v + 32 * blk(v) + 2 * v + 1024 * v
    audio = a * 256 + 2 * a + 229 * a + a + 12 * (blk(a) + 2 * a) + 2 * a + 1024 * a + 1
    assert sum(t.numel() for t in model.state_dict().values()) == vision + audio == 719_065_089


def _tiny_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 3, 2, 224, 224, generator=g), torch.randn(2, 3, 1, 128, 204, generator=g)


def test_tiny_checkpoint_with_released_nesting_loads_and_reproduces(tmp_path, caplog):
    src = net.build_tiny(seed=5).eval()
    sd = dict(src.state_dict())
    sd["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)  # other towers: reported only
    sd["modality_preprocessors.depth.cls_token"] = torch.zeros(1, 1, 2)
    path = tmp_path / "imagebind_tiny.pth"
    torch.save(sd, path)
    video, audio = _tiny_inputs()
    with torch.inference_mode():
        want = src({"vision": video, "audio": audio})
    for build in (lambda: net.build_tiny(seed=9), lambda: net.ImageBind(net.ImageBindConfig.tiny()).to("meta")):
        dst = build()
        with caplog.at_level(logging.INFO, logger="frozen"):
            report = net.load_imagebind(dst, path)
        assert report["missing"] == [] and len(report["unexpected"]) == 2
        with torch.inference_mode():
            got = dst.eval()({"vision": video, "audio": audio})
        for m in ("vision", "audio"):
            assert got[m].shape == (2, 16)
            torch.testing.assert_close(got[m], want[m], rtol=0, atol=0)
    assert "other ImageBind modalities" in caplog.text
    # the audio postprocessor scales by 20; the vision one only normalises; clip embeddings are averaged
    with torch.inference_mode():
        per_clip = src.embed("audio", audio[0])
    torch.testing.assert_close(per_clip.norm(dim=-1), torch.full((3,), 20.0))
    torch.testing.assert_close(want["audio"][0], per_clip.mean(0))


def test_load_rejects_missing_and_misshapen_keys(tmp_path):
    sd = dict(net.build_tiny().state_dict())
    sd.pop("modality_trunks.audio.blocks.1.attn.bias_k")
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match="missing"):
        net.load_imagebind(net.build_tiny(), tmp_path / "missing.pth")
    sd = dict(net.build_tiny().state_dict())
    sd["modality_heads.vision.2.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match="wrong shape"):
        net.load_imagebind(net.build_tiny(), tmp_path / "shape.pth")
    with pytest.raises(FileNotFoundError):
        net.build_imagebind(tmp_path / "nope.pth")


def test_still_image_is_repeated_to_two_frames():
    model = net.build_tiny().eval()
    img = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        a = model.embed("vision", img)
        b = model.embed("vision", img[:, :, None].repeat(1, 1, 2, 1, 1))
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------- audio input


def test_clip_timepoints_follow_constant_clips_per_video_sampler():
    assert ib.clip_timepoints(8.0) == [(0, 2), (3, 5), (6, 8)]
    assert ib.clip_timepoints(5.0) == [(0, 2), (Fraction(3, 2), Fraction(7, 2)), (3, 5)]
    assert ib.clip_timepoints(1.5) == [(0, 2), (0, 2), (0, 2)]  # short: three copies, zero-padded later


def test_audio_clips_match_kaldi_native_fbank(knf_fbank):
    """Kaldi (and kaldi-native-fbank) refuse 128 bins at 16 kHz / 512-point FFT because mel bin 3 gets no FFT bin;
    torchaudio, which ImageBind uses, returns log(float32 eps) there. So the whole clip pipeline (clip times, in-place
    centring, fbank, padding, normalisation) is checked against kaldi-native-fbank with 126 bins, and the 128-bin
    output is checked for the empty bin and against the same code path."""
    wav = _wave()
    clips = ib.audio_clips(wav, net.ImageBindConfig(mel_bins=126)).numpy()  # (3, 1, 126, 204)
    assert clips.shape == (3, 1, 126, 204)
    for i, (start, end) in enumerate([(0, 2), (3, 5), (6, 8)]):
        seg = wav[start * SR:end * SR].astype(np.float64)
        ref = knf_fbank((seg - seg.mean()).astype(np.float32), 126).T  # (126, 198)
        assert ref.shape == (126, 198)
        ours = clips[i, 0] * ib.AUDIO_STD + ib.AUDIO_MEAN
        err = np.abs(ours[:, :198] - ref)
        assert err.max() < 0.03 and np.median(err) < 1e-4, (i, err.max())
        np.testing.assert_allclose(clips[i, 0, :, 198:], -ib.AUDIO_MEAN / ib.AUDIO_STD)  # zero fbank padding
    full = ib.audio_clips(wav).numpy()
    assert full.shape == (3, 1, 128, 204)
    empty = (full[:, 0, 3, :198] * ib.AUDIO_STD + ib.AUDIO_MEAN)
    np.testing.assert_allclose(empty, np.log(np.finfo(np.float32).eps), rtol=1e-5)
    assert np.isfinite(full).all() and full[:, 0, [0, 1, 2, 4, 60, 127], :198].std() > 0.1
    with pytest.raises(ValueError, match="samples"):
        ib.audio_clips(np.zeros(100, np.float32))


# ----------------------------------------------------------------------------------------- video input


def test_resize_and_three_crops_follow_the_reference_geometry():
    x = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    y = ib.resize_short_side(x, 224)
    assert y.shape == (2, 3, 224, 298) and y.min() >= 0 and y.max() <= 255 and torch.equal(y, y.round())
    assert ib.resize_short_side(torch.zeros(1, 3, 300, 224, dtype=torch.uint8), 224).shape == (1, 3, 300, 224)
    wide = torch.arange(5 * 9).view(1, 5, 9)
    assert [c[0, 0, 0].item() for c in ib.spatial_crops(wide, 5)] == [0, 2, 4]  # left, centre (ceil), right
    tall = torch.arange(9 * 5).view(1, 9, 5)
    assert [c[0, 0, 0].item() for c in ib.spatial_crops(tall, 5)] == [0, 10, 20]  # top, centre, bottom


def test_video_clips_pair_consecutive_frames_for_each_crop():
    frames = np.stack([np.full((224, 300, 3), 10 * (i + 1), np.uint8) for i in range(4)])
    frames[:, :, :30] = 0  # only the left crop (x0 = 0; centre 38, right 76) starts dark
    clips = ib.video_clips(frames)
    assert clips.shape == (9, 3, 2, 224, 224)
    mean, std = torch.tensor(ib.CLIP_MEAN), torch.tensor(ib.CLIP_STD)
    level = lambda k: ((10 * (k + 1) / 255.0 - mean) / std)  # noqa: E731
    for n in range(9):
        clip, crop = divmod(n, 3)  # clip-major, then crop, as av-benchmark concatenates them
        for t in range(2):
            torch.testing.assert_close(clips[n, :, t, 100, -1], level(clip + t), rtol=0, atol=1e-5)
        assert (clips[n, 0, 0, 0, 0] < level(clip)[0]) == (crop == 0)


def test_decode_frames_at_half_fps(tmp_path):
    path = _write_video(tmp_path / "v.mp4", seconds=8.5, fps=4)
    frames = ib.decode_frames(path, max_frames=4)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    idx = (frames.mean(axis=(1, 2, 3)) - frames[0].mean()) / 3  # brightness steps of 3 per input frame
    np.testing.assert_allclose(np.diff(idx), 8, atol=0.5)  # one frame every 2 s at 4 fps
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a real video")
    with pytest.raises(ValueError, match="decode"):
        ib.decode_frames(bad)


# ----------------------------------------------------------------------------------------- scorer


def test_scorer_is_finite_bounded_deterministic_and_matches_forward(tmp_path):
    video = _write_video(tmp_path / "v.mp4", seconds=8.5)
    wav = _wave()
    params = EvalParams(imagebind_ckpt="tiny", seed=0, seconds=8.0, device="cpu")
    s1 = ib.build_ib_scorer(params)
    s2 = ib.build_ib_scorer(params)
    a, b = s1(video, wav), s2(video, wav)
    assert np.isfinite(a) and -100.0 <= a <= 100.0
    assert a == b and s1(video, wav) == a
    other = ib.build_ib_scorer(dataclasses.replace(params, seed=1))(video, wav)
    assert other != a
    frames = ib.decode_frames(video, max_frames=4)
    with torch.inference_mode():
        out = s1.model({"vision": ib.video_clips(frames)[None], "audio": ib.audio_clips(wav)[None]})
    want = 100 * torch.cosine_similarity(out["vision"], out["audio"], dim=-1).item()
    assert a == pytest.approx(want, abs=1e-4)
    short = _write_video(tmp_path / "short.mp4", seconds=2.5)
    with pytest.raises(ValueError, match="frames"):
        s1(short, wav)


def test_run_computes_ib_score_when_configured(tmp_path):
    scorers, reasons = build_video_scorers(EvalParams(imagebind_ckpt=None))
    assert "ib_score" not in scorers and "not configured" in reasons["ib_score"]
    scorers, reasons = build_video_scorers(EvalParams(imagebind_ckpt="tiny", seed=0, seconds=1.5))
    assert isinstance(scorers["ib_score"], ib.ImageBindScorer) and "ib_score" not in reasons
    pairs = []
    for i in range(3):
        gen, gt = tmp_path / f"gen{i}.wav", tmp_path / f"gt{i}.wav"
        sf.write(gen, _wave(2.0, seed=i), SR)
        sf.write(gt, _wave(2.0, seed=10 + i), SR)
        vid = tmp_path / f"v{i}.mp4"
        if i < 2:
            _write_video(vid, seconds=4.5, seed=i)
        else:
            vid.write_bytes(b"not a real video")
        pairs.append((f"clip{i}", gt, gen, vid))
    params = EvalParams(model="tiny", seed=0, gallery=False, seconds=1.5, imagebind_ckpt="tiny")
    res = run(params, pairs=pairs, out_dir=tmp_path / "eval", embedders=build_embedders(params))
    m = res["metrics"]["ib_score"]
    assert m["status"] == "ok" and m["n_clips"] == 2 and m["n_failed"] == 1
    assert np.isfinite(m["value"]) and -100 <= m["value"] <= 100
    assert res["metrics"]["desync"]["status"] == "skipped"
