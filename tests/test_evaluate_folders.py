"""`v2a evaluate --pred --gt`: any folders scored with the evaluate protocol, matched by stem, unmatched listed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from scoring.embedders import build_embedders
from scoring.folders import evaluate_folders, match
from scoring.params import EvalParams
from scoring.run import ClipPair, run
from lab.cli import app

REPO = Path(__file__).resolve().parent.parent
SR = 16000
TINY = EvalParams(model="tiny", seed=0, gallery=False, seconds=1.5)


def _tone(i, seconds=2.0, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed + i).normal(size=t.size)
    return (0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture()
def folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for i, stem in enumerate(["a", "b", "c", "e"]):
        sf.write(pred / f"{stem}.wav", _tone(i, seed=100), SR)
    for i, stem in enumerate(["a", "b", "d"]):
        sf.write(gt / f"{stem}.wav", _tone(i), SR)
    sf.write(gt / "e.flac", _tone(3), 22050)  # another format and rate: resampled like ours
    return pred, gt


def test_matched_by_stem_and_unmatched_listed(folders, tmp_path):
    pred, gt = folders
    pairs, unmatched = match(pred, gt)
    assert [p.clip_id for p in pairs] == ["a", "b", "e"]
    assert [(u["clip_id"], u["missing"]) for u in unmatched] == [("c", "ground truth"), ("d", "prediction")]
    (gt / "a.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="two files for 'a'"):
        match(pred, gt)
    with pytest.raises(FileNotFoundError, match="--gt folder"):
        match(pred, tmp_path / "nope")


def test_same_protocol_as_the_stage(folders, tmp_path):
    pred, gt = folders
    emb = build_embedders(TINY)
    res = evaluate_folders(TINY, pred, gt, tmp_path / "ev", embedders=emb)
    same = run(TINY, pairs=[ClipPair(s, gt / f"{s}.{'flac' if s == 'e' else 'wav'}", pred / f"{s}.wav")
                            for s in ("a", "b", "e")], out_dir=tmp_path / "direct", embedders=emb)
    for key, m in same["metrics"].items():
        assert res["metrics"][key] == m, key
    assert res["unmatched"] == {"ground truth": 1, "prediction": 1, "video": 0}
    rows = list(csv.DictReader(open(tmp_path / "ev" / "unmatched.csv")))
    assert [r["clip_id"] for r in rows] == ["c", "d"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["source"]["pred"] == str(pred)


def test_cli(folders, tmp_path):
    pred, gt = folders
    cfg = ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml"),
           "--set", "stages.evaluate.params.imagebind_ckpt=null", "--set", "stages.evaluate.params.synchformer_ckpt=null",
           "--set", "stages.evaluate.params.seconds=1.5", "--set", "stages.evaluate.params.gallery=false"]
    r = CliRunner().invoke(app, cfg + ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert f"{pred}: 3 scored against {gt}; unmatched: 1 without ground truth, 1 without prediction" in r.output
    assert "RANDOM WEIGHTS (tiny)" in r.output and "{" not in r.output and (tmp_path / "o" / "table.md").is_file()
    assert "| `pred` (--pred folder, 3 clips) **RANDOM WEIGHTS (tiny)** |" in (tmp_path / "o" / "table.md").read_text()
    r = CliRunner().invoke(app, cfg + ["evaluate", "--pred", str(tmp_path / "missing"), "--gt", str(gt)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def _video(path, audio: np.ndarray, rate: int = 48000, seconds: float = 2.0):
    """A 32x32 mp4 (8 fps) whose stereo AAC soundtrack is ``audio`` (N,) on the left, half of it on the right."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=8)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=rate, layout="stereo")
        for i in range(int(seconds * 8)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 15 * i, np.uint8), format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
        x = np.stack([audio, audio / 2]).astype(np.float32)  # (2, N) planar
        fs = a.codec_context.frame_size
        for k in range(0, x.shape[1], fs):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, k: k + fs]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, k
            c.mux(a.encode(frame))
        c.mux(a.encode(None))


def test_gt_folder_of_videos_read_as_the_stage_reads_them(folders, tmp_path):
    """--gt holding the source videos: each one's audio is read whole, at its own rate, every channel (what the
    evaluate stage does with a source file), scored exactly like that audio given as an array; the videos also
    stand in for --video; the table names the --pred folder, marked as measured with random weights."""
    from scoring.audio import read_audio

    pred, _ = folders
    vids = tmp_path / "videos"
    vids.mkdir()
    t = np.arange(2 * 48000) / 48000
    for i, stem in enumerate(["a", "b", "c"]):
        _video(vids / f"{stem}.mp4", (0.3 * np.sin(2 * np.pi * (300 + 150 * i) * t)).astype(np.float32))
    (vids / "notes.txt").write_text("not a clip")
    emb = build_embedders(TINY)
    res = evaluate_folders(TINY, pred, vids, tmp_path / "ev", embedders=emb)
    assert res["source"]["video"] == str(vids) and res["unmatched"] == {"ground truth": 1, "prediction": 0,
                                                                          "video": 0}
    decoded = {s: read_audio(vids / f"{s}.mp4") for s in "abc"}
    assert all(ch.shape[0] == 2 and sr == 48000 for ch, sr in decoded.values())
    same = run(TINY, pairs=[ClipPair(s, (decoded[s][0].T, decoded[s][1]), pred / f"{s}.wav") for s in "abc"],
               out_dir=tmp_path / "direct", embedders=emb)
    for key, m in same["metrics"].items():
        assert res["metrics"][key] == m, key
    table = (tmp_path / "ev" / "table.md").read_text()
    assert "| `pred` (--pred folder, 3 clips) **RANDOM WEIGHTS (tiny)** |" in table and "Ours" not in table
    assert table.startswith("# Evaluation: RANDOM WEIGHTS (tiny)\n")
    (vids / "a.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="two files for 'a'"):
        match(pred, vids)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no audio"):
        match(pred, empty)
