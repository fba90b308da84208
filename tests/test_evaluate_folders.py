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
    assert "3 scored" in r.output and (tmp_path / "o" / "table.md").is_file()
    r = CliRunner().invoke(app, cfg + ["evaluate", "--pred", str(tmp_path / "missing"), "--gt", str(gt)])
    assert r.exit_code == 1 and "Traceback" not in r.output
