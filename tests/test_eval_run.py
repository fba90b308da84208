"""End-to-end evaluation with tiny seeded models on synthetic audio: outputs, counts, skips and rejects."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from scoring.embedders import Embeddings, build_embedders
from scoring.run import ClipPair, pairs_from_folders, run
from scoring.params import EvalParams

SR = 16000
SECONDS = 1.5  # tests crop to 1.5 s to stay fast on a shared CPU; the protocol default is 8 s
TINY = EvalParams(model="tiny", seed=0, gallery=False, seconds=SECONDS)


def _tone(i, seconds, noise=0.05, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed + i)
    return (0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + noise * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def embedders():
    return build_embedders(TINY)


def _dataset(tmp_path, n=11):
    """n clips of 2 s (cropped to 1.5 s), the first generated one short (1.2 s), the last without ground truth."""
    gen_dir, gt_dir, vid_dir = tmp_path / "outputs", tmp_path / "gt", tmp_path / "videos"
    for d in (gen_dir, gt_dir, vid_dir):
        d.mkdir()
    for i in range(n):
        cid = f"clip{i:02d}"
        sf.write(gen_dir / f"{cid}.wav", _tone(i, 1.2 if i == 0 else 2.0, seed=100), SR)
        if i != n - 1:
            sf.write(gt_dir / f"{cid}.wav", _tone(i, 2.5), SR)
        (vid_dir / f"{cid}.mp4").write_bytes(b"not a real video")
    return gen_dir, gt_dir, vid_dir


def test_run_end_to_end_counts_and_files(tmp_path, embedders):
    gen_dir, gt_dir, vid_dir = _dataset(tmp_path)
    pairs = pairs_from_folders(gen_dir, gt_dir, video_dir=vid_dir)
    assert len(pairs) == 11 and pairs[-1].gt is None
    seen = []

    def fake_desync(video, audio):  # a scorer gets the whole file and prepares its own input (scoring/audio.py)
        seen.append((video.name, audio.duration, len(audio.sync_input(SECONDS))))
        return 0.2

    res = run(TINY, pairs=pairs, out_dir=tmp_path / "eval", embedders=embedders,
              video_scorers={"desync": fake_desync})
    m = res["metrics"]
    assert res["counts"] == {"clips": 11, "generated_ok": 11, "ground_truth_ok": 10, "missing_ground_truth": 1,
                             "short": 1}
    for key in ("fd_passt", "fd_panns", "fd_vgg"):
        assert m[key]["status"] == "ok" and np.isfinite(m[key]["value"]), m[key]
        assert m[key]["n_gt"] == 10
    assert m["fd_panns"]["n_gen"] == 11
    assert m["fd_vgg"]["n_gen"] == 11 and m["fd_vgg"]["n_gen_rows"] == 11  # one 0.96 s VGGish example per clip
    assert m["kl_panns"]["n_clips"] == m["kl_passt"]["n_clips"] == 10
    assert m["is_panns"]["status"] == "ok" and m["is_panns"]["n_clips"] == 11 and m["is_panns"]["value"] >= 1
    assert m["ib_score"]["status"] == "skipped" and "not configured" in m["ib_score"]["reason"]
    assert m["ib_score"]["value"] is None
    d = m["desync"]
    assert d["status"] == "ok" and d["value"] == pytest.approx(0.2)
    assert d["n_clips"] == 10 and d["n_excluded_short"] == 1
    assert all(d == 2.0 and n == SECONDS * SR for _, d, n in seen) and "clip00.mp4" not in [v for v, _, _ in seen]

    out = tmp_path / "eval"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["kl_panns"]["value"] == pytest.approx(m["kl_panns"]["value"])
    assert saved["paper_mfm_mapper"]["fd_passt"] == 111.74 and saved["complete"] is True
    rows = list(csv.DictReader((out / "per_clip.csv").open()))
    assert [r["clip_id"] for r in rows] == [f"clip{i:02d}" for i in range(11)]
    assert rows[0]["short"] == "True" and rows[0]["desync"] == ""
    assert "missing ground truth" in rows[-1]["reason"] and rows[-1]["kl_panns"] == ""
    assert float(rows[3]["gen_seconds"]) == pytest.approx(2.0)
    table = (out / "table.md").read_text()
    assert "| Method | FD_PaSST | FD_PANNs | FD_VGG | KL_PANNs | KL_PaSST | IS | IB-score | DeSync |" in table
    assert "| MFM-Mapper (quoted from the paper, Table 1; VGGSound test) | 111.74 | 9.90 | 1.74 | 2.26 | 2.23 | " \
           "12.22 | 26.07 | 1.073 |" in table
    assert "Ours (this run, 11 clips)" in table and "| IB-score | skipped | 0 |" in table


def test_run_is_deterministic(tmp_path, embedders):
    gen_dir, gt_dir, _ = _dataset(tmp_path)
    pairs = pairs_from_folders(gen_dir, gt_dir)[1:5]
    a = run(TINY, pairs=pairs, out_dir=tmp_path / "a", embedders=embedders)["metrics"]
    b = run(TINY, pairs=pairs, out_dir=tmp_path / "b")["metrics"]  # embedders rebuilt from the seed
    for k in ("fd_panns", "fd_passt", "kl_panns", "kl_passt"):
        assert a[k]["value"] == pytest.approx(b[k]["value"], rel=1e-9)
    assert a["desync"]["status"] == "skipped" and "synchformer_ckpt" in a["desync"]["reason"]


class _NaNFor:
    """Wraps an embedder; returns NaN embeddings for silent input."""

    def __init__(self, inner):
        self.inner = inner

    def embed(self, wav):
        e = self.inner.embed(wav)
        if np.abs(wav.channels).max() == 0:
            return Embeddings(np.full_like(e.embedding, np.nan), None if e.logits is None else e.logits * np.nan)
        return e


def test_nan_audio_nan_embeddings_and_too_few_clips(tmp_path, embedders):
    bad = _tone(1, 2.0)
    bad[100] = np.nan
    pairs = [ClipPair("a", _tone(0, 2.0), _tone(0, 2.0, seed=5)),
             ClipPair("b", _tone(1, 2.0), bad),
             ClipPair("c", _tone(2, 2.0), np.zeros(2 * SR, np.float32)),
             ("d", (_tone(3, 4.0, seed=9)[::2], 8000), _tone(3, 2.0, seed=7)),  # gt at 8 kHz, resampled
             {"clip_id": "e", "gt": _tone(4, 2.0), "gen": _tone(4, 2.0, seed=3)}]
    wrapped = {k: _NaNFor(v) for k, v in embedders.items()}
    res = run(TINY, pairs=pairs, out_dir=tmp_path / "ev", embedders=wrapped)
    m = res["metrics"]
    assert res["rejects"] == [{"clip_id": "b", "reason": "generated audio contains NaN/inf samples"}]
    assert m["kl_panns"]["n_clips"] == 3  # a, d, e: b unreadable, c NaN embedding
    assert m["fd_panns"]["n_gen"] == 3 and m["fd_panns"]["n_gt"] == 5
    assert m["is_panns"]["status"] == "skipped" and "at least 10 clips" in m["is_panns"]["reason"]
    rows = {r["clip_id"]: r for r in csv.DictReader((tmp_path / "ev" / "per_clip.csv").open())}
    assert rows["b"]["status"] == "rejected" and "NaN/inf samples" in rows["b"]["reason"]
    assert "NaN/inf embedding" in rows["c"]["reason"]
    assert rows["a"]["status"] == "ok"


def test_input_validation(tmp_path, embedders):
    with pytest.raises(ValueError, match="unknown keys"):
        run({"model": "tiny", "sconds": 8}, pairs=[("a", None, _tone(0, 2))], out_dir=tmp_path)
    with pytest.raises(ValueError, match="appears twice"):
        run(TINY, pairs=[("a", None, _tone(0, 2)), ("a", None, _tone(0, 2))], out_dir=tmp_path,
            embedders=embedders)
    with pytest.raises(ValueError, match="not safe"):
        run(TINY, pairs=[("../x", None, _tone(0, 2))], out_dir=tmp_path, embedders=embedders)
    with pytest.raises(ValueError, match="empty"):
        run(TINY, pairs=[], out_dir=tmp_path, embedders=embedders)
