"""A run's log is for people: no Python warning escapes a stage chain, and the known ones become one explained line.

The chain is the demo's (tiny models, synthetic clips) from frames to evaluate with every warning recorded
(``simplefilter("always")``, so a warning already shown once in this process still counts). Known warnings are
handled where they arise: scipy's singular-``sqrtm`` LinAlgWarning (FD on few clips) becomes one log line per
process (scoring/metrics.py), diffusers' ``AudioLDMPipeline`` deprecation notice is filtered where the pipeline is
built (frozen/audioldm.py).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from pipeline.demo_data import make_demo_clips
from v2a.runner import Runner

CHAIN = ("stages.frames.params.shard_size=4", "stages.train.params.epochs=2", "stages.train.params.global_batch=2",
         "stages.generate.params.steps=2", "stages.evaluate.params.gallery=false")


def test_a_stage_chain_lets_no_python_warning_escape(tmp_path, demo_config):
    make_demo_clips(tmp_path / "videos", n=6, seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ran = Runner(demo_config(tmp_path, *CHAIN)).run(["evaluate"], progress=False)
    assert ran == ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []


def test_singular_fd_is_one_explained_line_not_a_warning(caplog, monkeypatch):
    from scoring import metrics

    monkeypatch.setattr(metrics, "_explained", set())
    gen = np.zeros((4, 8))
    gen[:, 0] = [1.0, 2.0, 3.0, 4.0]  # 7 of 8 dimensions never vary: a singular covariance
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="scoring.metrics"):
        warnings.simplefilter("always")
        first = metrics.compute_fd(gen, gen + 0.5)
        second = metrics.compute_fd(gen, gen + 0.5)
    assert caught == []
    lines = [r.getMessage() for r in caplog.records if r.name == "scoring.metrics"]
    assert len(lines) == 1 and "singular" in lines[0] and "only indicative" in lines[0]
    # the value itself is unchanged: ||mu1 - mu2||^2 = 8 x 0.25, equal covariances cancel
    assert first.value == second.value and abs(first.value - 2.0) < 1e-9


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_audioldm_deprecation_notice_is_filtered():
    from frozen.audioldm import build_audioldm_pipeline

    notices = logging.getLogger("diffusers.pipelines.pipeline_utils")  # the logger diffusers writes the notice to
    seen = _Records()
    notices.addHandler(seen)
    try:
        pipe = build_audioldm_pipeline({"model": "tiny", "seed": 0})
        notices.warning("The OtherPipeline has been deprecated and will not receive bug fixes")  # not ours: kept
    finally:
        notices.removeHandler(seen)
    assert type(pipe).__name__ == "AudioLDMPipeline"
    assert [m for m in seen.messages if "has been deprecated" in m] == [
        "The OtherPipeline has been deprecated and will not receive bug fixes"]
