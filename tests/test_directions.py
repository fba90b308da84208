"""Messages that point the right way: no trained run -> `--mapper DIR_OR_ID` and `v2a export`; bars only on a
terminal; log numbers rounded (v2a/logfmt.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from infer.export import check_trained
from lab.session import State
from v2a.logfmt import g5, pairs


def test_no_trained_run_names_mapper_and_export(tmp_path, demo_config):
    cfg = demo_config(tmp_path)
    with pytest.raises(RuntimeError) as err:
        check_trained(cfg)
    msg = str(err.value)
    assert msg.startswith(f"no trained mapper in {cfg.mapper_dir}: ") and "\n" not in msg
    assert "--mapper DIR_OR_ID" in msg and "`v2a export`" in msg and "make train" not in msg


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    state = State()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    state.progress = True
    assert state.wants_progress and not state.progress  # a redirected log: no bars
    monkeypatch.setattr("sys.stderr", Tty())
    assert state.progress
    state.progress = False  # --no-progress
    assert not state.progress


def test_log_numbers_have_five_significant_digits():
    assert g5(0.08083058753516865) == "0.080831" and g5(np.float32(0.028133369865827262)) == "0.028133"
    assert g5(8.187207099237165e-14) == "8.1872e-14" and g5(None) == "-" and g5(12) == "12" and g5("skipped") == "skipped"
    assert pairs({"fd_passt": "skipped", "kl_panns": 0.000943171685128686, "clips": 4}) == \
        "fd_passt skipped, kl_panns 0.00094317, clips 4"
