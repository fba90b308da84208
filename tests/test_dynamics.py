"""Training dynamics curve: read from the points' metrics.json, written as CSV and a PNG (Fig. 3 panels)."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from trainer.dynamics import CURVE, Dynamics, plot_curve, read_curve, write_curve


def _point(run, epoch, ib, desync, fd):
    d = run / "dynamics" / f"epoch-{epoch:04d}"
    d.mkdir(parents=True)
    metrics = {"ib_score": {"status": "ok", "value": ib, "n_clips": 4},
               "desync": {"status": "skipped", "value": None, "n_clips": 0} if desync is None else
               {"status": "ok", "value": desync, "n_clips": 3},
               "fd_passt": {"status": "ok", "value": fd, "n_gen": 4, "n_gt": 4}}
    (d / "metrics.json").write_text(json.dumps({"epoch": epoch, "metrics": metrics, "complete": True}))


def test_curve_csv_and_png(tmp_path):
    _point(tmp_path, 10, 20.0, 1.2, 150.0)
    _point(tmp_path, 5, 18.5, None, 180.0)  # written out of order; DeSync skipped at this point
    rows = write_curve(tmp_path)
    assert [r["epoch"] for r in rows] == [5, 10] and rows[0]["desync"] is None and rows[1]["desync"] == 1.2
    got = list(csv.DictReader(open(tmp_path / "dynamics.csv")))
    assert [(g["epoch"], g["ib_score"], g["fd_passt_clips"]) for g in got] == [("5", "18.5", "4"), ("10", "20.0", "4")]
    img = Image.open(tmp_path / "dynamics.png")
    assert img.size == (360 * len(CURVE), 260)
    assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 2  # axes, text, curve
    assert read_curve(tmp_path / "nothing") == []
    plot_curve({"ours": rows, "diff-mapper": rows[:1]}, tmp_path / "both.png")  # several runs, one figure
    assert Image.open(tmp_path / "both.png").size == (360 * len(CURVE), 260 + 2 * 14)


def test_points_are_due_every_k_and_at_the_end(tmp_path):
    dyn = Dynamics(None, every=3, clips=2, epochs=10, out=tmp_path)
    assert [e for e in range(1, 11) if dyn.due(e)] == [3, 6, 9, 10]
    assert not Dynamics(None, every=0, clips=2, epochs=10, out=tmp_path).due(10)
    (tmp_path / "val_ids.txt").write_text("c\na\nb\nd\n")
    assert dyn.chosen_ids() == dyn.chosen_ids() and len(dyn.chosen_ids()) == 2
