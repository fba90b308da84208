"""write_clip: the per-clip files; the sound's peak level and silence in the json, the log and the figure title;
``video_seconds`` (``--duration``) cuts the written video to the sound's span."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from infer.generate import write_clip
from infer.media_out import video_span
from test_infer_media import SOURCES, _make_clip

SR = 16000


def test_silent_sound_is_recorded_and_logged(tmp_path, caplog):
    quiet = np.full(SR, 3e-5, np.float32)  # -90.5 dBFS
    with caplog.at_level(logging.WARNING, logger="infer.generate"):
        rec = write_clip(tmp_path, "q", quiet, video=None, ground_truth=None, prompt="beep", info={})
    assert rec["silent"] is True and rec["peak_dbfs"] == pytest.approx(-90.46, abs=0.01)
    assert json.loads((tmp_path / "q.json").read_text())["silent"] is True
    assert [r.getMessage() for r in caplog.records] == [
        "q: the generated sound is silent (peak -90.5 dBFS, below -60 dBFS)"]
    caplog.clear()
    loud = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="infer.generate"):
        rec = write_clip(tmp_path, "l", loud, video=None, ground_truth=None, prompt=None, info={})
    assert rec["silent"] is False and rec["peak_dbfs"] == pytest.approx(-6.02, abs=0.01) and not caplog.records
    assert write_clip(tmp_path, "z", np.zeros(SR, np.float32), video=None, ground_truth=None, prompt=None,
                      info={})["peak_dbfs"] is None  # -inf is not JSON


def test_video_seconds_cuts_the_video_to_the_sound(tmp_path):
    src = tmp_path / "src.mp4"
    _make_clip(src, *SOURCES[".mp4"])  # 1.5 s at 10 fps
    sound = 0.2 * np.sin(2 * np.pi * 300 * np.arange(SR // 2) / SR).astype(np.float32)  # 0.5 s
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = write_clip(tmp_path / "a", "c", sound, video=str(src), ground_truth=None, prompt=None, info={})
    cut = write_clip(tmp_path / "b", "c", sound, video=str(src), ground_truth=None, prompt=None, info={},
                     video_seconds=0.5)
    assert np.subtract(*video_span(tmp_path / "a" / whole["video"])[::-1]) == pytest.approx(1.5, abs=0.11)
    assert video_span(tmp_path / "b" / cut["video"]) == pytest.approx((0.0, 0.5), abs=1e-6)
    assert cut["mux"]["video_duration"] == pytest.approx(0.5) and cut["mux"]["audio_seconds"] == pytest.approx(0.5)
