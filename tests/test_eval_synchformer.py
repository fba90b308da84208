"""Synchformer / DeSync: checkpoint names, building blocks against plain references, preprocessing, scorer."""

import logging

import av
import numpy as np
import pytest
import torch

from scoring.desync import (OFFSETS, DeSyncScorer, build_desync_scorer, htk_mel_filters, load_synchformer,
                                  log_mel_segments, read_video_frames, resize_center_crop, video_segments)
from frozen.synchformer import CLSEncoderLayer, DividedAttention, Synchformer, SynchformerConfig
from scoring.params import EvalParams



def _make_video(path, seconds=8.5, fps=30, w=64, h=48):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(round(seconds * fps))):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (i * 7) % 256
            img[:, i % w, 1] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _make_video(tmp_path_factory.mktemp("sync") / "clip.mp4")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return Synchformer(SynchformerConfig.tiny()).eval()


def _wav(seed=0, n=128000):
    return (0.1 * np.random.default_rng(seed).normal(size=n)).astype(np.float32)


def test_full_model_has_release_checkpoint_names_and_shapes(meta_keys, reference_keys):
    own = dict(meta_keys(Synchformer))
    ref = dict(reference_keys("synchformer_keys"))
    assert len(ref) == 513
    assert sorted(set(own) - set(ref)) == [] and sorted(set(ref) - set(own)) == []
    assert own == ref


def test_divided_attention_matches_masked_dense_attention():
    torch.manual_seed(0)
    D, h, f, n = 8, 2, 3, 4
    m = DividedAttention(D, h)
    x = torch.randn(2, 1 + f * n, D)
    qkv = m.qkv(x).reshape(2, 1 + f * n, 3, h, D // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (D // h) ** -0.5, qkv[1], qkv[2]
    frame = torch.cat([torch.tensor([-1]), torch.arange(f).repeat_interleave(n)])
    place = torch.cat([torch.tensor([-1]), torch.arange(n).repeat(f)])
    for over_time, same in ((True, place), (False, frame)):
        allowed = (same[:, None] == same[None, :]) | (torch.arange(1 + f * n)[None, :] == 0)
        allowed[0] = True  # CLS attends to everything
        att = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf")).softmax(-1)
        ref = m.proj((att @ v).transpose(1, 2).reshape(2, 1 + f * n, D))
        torch.testing.assert_close(m(x, f, over_time), ref, rtol=1e-5, atol=1e-6)


def test_cls_encoder_layer_matches_torch_transformer_layer():
    torch.manual_seed(0)
    ours = CLSEncoderLayer(8, 2, 32).eval()
    ref = torch.nn.TransformerEncoderLayer(8, 2, 32, dropout=0.0, activation=torch.nn.GELU(), batch_first=True,
                                           layer_norm_eps=1e-6, norm_first=True).eval()
    sd = ours.state_dict()
    ref.load_state_dict({k: v for k, v in sd.items() if k != "cls_token"})
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        expect = ref(torch.cat([sd["cls_token"].expand(3, -1, -1), x], 1))[:, 0]
        torch.testing.assert_close(ours(x), expect, rtol=1e-5, atol=1e-5)


def test_log_mel_matches_numpy():
    wav = _wav(1)
    ours = log_mel_segments(wav).numpy()
    assert ours.shape == (24, 128, 66)
    seg = wav[5120 * 3: 5120 * 3 + 10240].astype(np.float64)
    padded = np.pad(seg, 512, mode="reflect")
    win = np.zeros(1024)
    win[312:712] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([padded[i:i + 1024] for i in range(0, len(padded) - 1023, 160)])  # (65, 1024)
    power = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2
    mel = np.log(power @ htk_mel_filters().numpy().astype(np.float64) + 1e-6).T  # (128, 65)
    expect = (mel - -4.2677393) / (2 * 4.5689974)
    np.testing.assert_allclose(ours[3, :, :65], expect, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(ours[:, :, 65], 4.2677393 / (2 * 4.5689974), rtol=1e-6)  # padded column
    fb = htk_mel_filters().numpy()
    assert fb.shape == (513, 128) and fb.max() <= 1.0 + 1e-6 and (fb.sum(0) > 0).all()
    with pytest.raises(ValueError):
        log_mel_segments(wav[:100000])


def test_video_preprocessing_shapes(video):
    frames = read_video_frames(video)
    assert frames.shape == (213, 48, 64, 3) and frames.dtype == np.uint8  # 8.5 s at 30 fps -> 25 fps
    assert read_video_frames(video, max_frames=200).shape[0] == 200
    assert tuple(resize_center_crop(frames[:2], 224).shape) == (2, 3, 224, 224)
    assert tuple(resize_center_crop(frames[:2].transpose(0, 2, 1, 3), 224).shape) == (2, 3, 224, 224)
    same = np.random.default_rng(0).integers(0, 256, (1, 224, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(same, 224)[0].permute(1, 2, 0).numpy(), same[0, :, 38:262])
    segs = video_segments(frames, 32)
    assert tuple(segs.shape) == (24, 16, 3, 32, 32) and segs.min() >= -1 and segs.max() <= 1
    torch.testing.assert_close(segs[1, 0], segs[0, 8])  # step of 8 frames
    with pytest.raises(ValueError, match="frames"):
        video_segments(frames[:150], 32)


def test_tiny_checkpoint_in_release_nesting_loads_and_reproduces(tmp_path, video, caplog):
    a = _tiny(0)
    wav = _wav()
    out = DeSyncScorer(a).offsets(video, wav)
    logits_in = (torch.randn(1, 14, 8, 16), torch.randn(1, 14, 6, 16))
    with torch.no_grad():
        ref_logits = a.compare_v_a(*logits_in)
    sd = a.state_dict()
    path = tmp_path / "24-01-04T16-39-21.pt"
    torch.save({"model": {**sd, "extra.unused": torch.zeros(1)}, "epoch": 3}, path)
    b = _tiny(1)
    with caplog.at_level(logging.WARNING):
        load_synchformer(b, path)
    assert "extra.unused" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(b.compare_v_a(*logits_in), ref_logits, rtol=0, atol=0)
    np.testing.assert_array_equal(DeSyncScorer(b).offsets(video, wav), out)
    torch.save({"module." + k: v for k, v in sd.items() if k != "vproj.bias"}, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match="vproj.bias"):
        load_synchformer(_tiny(), tmp_path / "missing.pth")


def test_scorer_returns_grid_seconds_and_is_deterministic(video):
    assert build_desync_scorer(EvalParams()) is None and build_desync_scorer(EvalParams(synchformer_ckpt="")) is None
    with pytest.raises(FileNotFoundError):
        build_desync_scorer(EvalParams(synchformer_ckpt="/nonexistent/synchformer.pth"))
    s1, s2 = build_desync_scorer(EvalParams(synchformer_ckpt="tiny")), build_desync_scorer(EvalParams(synchformer_ckpt="tiny"))
    for seed in range(2):
        wav = _wav(seed)
        v = s1(video, wav)
        assert isinstance(v, float) and np.isfinite(v) and 0.0 <= v <= 2.0
        off = s1.offsets(video, wav)
        assert off.shape == (2,) and np.all(np.isclose(off[:, None], OFFSETS[None]).any(1))  # on the grid
        assert v == float(np.mean(np.abs(off)))
    assert s2(video, wav) == v  # a second scorer built from the same seed agrees
    assert len(s1._vcache) == 1  # video features computed once
    with pytest.raises(ValueError):
        s1(video, _wav(0, 64000))
