"""Training dynamics (paper Fig. 3): train keeps per-epoch weights (``save_every``); the ``dynamics`` stage
(lab/dynamics.py) generates and scores a fixed validation subset with each, resumes per point, and draws the curve."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from e2e_project import E2E, REPO
from lab.dynamics import CURVE, Params, chosen_ids, plot_curve, read_curve, settings, write_curve
from trainer.checkpoint import epoch_folder, saved_epochs, saves_epoch
from v2a.config import load_config
from v2a.context import stage_settings
from v2a.runner import Runner


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
    got = list(csv.DictReader(open(tmp_path / "dynamics" / "dynamics.csv")))
    assert [(g["epoch"], g["ib_score"], g["fd_passt_clips"]) for g in got] == [("5", "18.5", "4"), ("10", "20.0", "4")]
    img = Image.open(tmp_path / "dynamics" / "dynamics.png")
    assert img.size == (360 * len(CURVE), 260)
    assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 2  # axes, text, curve
    assert read_curve(tmp_path / "nothing") == [] and write_curve(tmp_path / "nothing") == []
    plot_curve({"ours": rows, "diff-mapper": rows[:1]}, tmp_path / "both.png")  # several runs, one figure
    assert Image.open(tmp_path / "both.png").size == (360 * len(CURVE), 260 + 2 * 14)


def test_train_keeps_epochs_every_k_and_the_last(tmp_path):
    assert [e for e in range(1, 11) if saves_epoch(e, 3, 10)] == [3, 6, 9, 10]
    assert not any(saves_epoch(e, 0, 10) for e in range(1, 11))
    for e in (10, 3, 6):
        (tmp_path / epoch_folder(e)).mkdir(parents=True)
        if e != 6:  # epoch 6: interrupted before its manifest (incomplete: not listed)
            (tmp_path / epoch_folder(e) / "manifest.json").write_text("{}")
    (tmp_path / "epochs" / "epoch-x").mkdir()
    assert saved_epochs(tmp_path) == {3: tmp_path / "epochs/epoch-0003", 10: tmp_path / "epochs/epoch-0010"}
    assert saved_epochs(tmp_path / "none") == {}


def test_the_same_seeded_clips_at_every_point(tmp_path):
    ids = tmp_path / "val_ids.txt"
    ids.write_text("c\na\nb\nd\n")
    two = chosen_ids(ids, 2, 0)
    assert two == chosen_ids(ids, 2, 0) and two == sorted(two) and len(two) == 2 and set(two) <= set("abcd")
    assert chosen_ids(ids, 9, 0) == ["a", "b", "c", "d"]
    assert len({tuple(chosen_ids(ids, 2, s)) for s in range(20)}) > 1  # the seed picks
    ids.write_text("")
    with pytest.raises(RuntimeError, match="val_fraction"):
        chosen_ids(ids, 2, 0)


@pytest.mark.parametrize("overlays", [[], ["configs/demo.yaml"]], ids=["packaged", "demo"])
def test_it_generates_and_scores_with_the_generate_and_evaluate_stages_settings(overlays):
    """One protocol for the table and the curve: the stage reads the generate and evaluate stages' own settings
    (their checkpoint names resolved as those stages resolve them; only the gallery is left out), and they are part
    of its fingerprint, not a copy in its params."""
    cfg = load_config([REPO / "stages.yaml", *(REPO / o for o in overlays)])
    runner = Runner(cfg)
    p = settings(runner.context("dynamics", strict=False))
    assert p.generate == stage_settings(cfg, "generate", strict=False)
    assert p.evaluate == dataclasses.replace(stage_settings(cfg, "evaluate", strict=False), gallery=False)
    assert set(Params.model_fields) == {"clips", "seed"}
    other = Runner(load_config([REPO / "stages.yaml", *(REPO / o for o in overlays)],
                               ["stages.generate.params.guidance=2.0"]))
    assert other.fingerprint("dynamics").value != runner.fingerprint("dynamics").value
    assert other.fingerprint("train").value == runner.fingerprint("train").value


def test_run_asks_train_for_per_epoch_weights(tmp_path, demo_config):
    """Off by default: nothing for the preflight (``v2a check`` of every stage stays clean); run says what to set."""
    from lab.dynamics import run

    runner = Runner(demo_config(tmp_path))
    runner.preflight(["dynamics"])  # no problem
    with pytest.raises(RuntimeError, match=r"kept no per-epoch weights .*stages.train.params.save_every"):
        run(runner.context("dynamics"))


def _weights(folder):
    return load_file(str(next(folder.glob("model-*.safetensors"))))


def test_dynamics_stage_end_to_end(e2e_project, tmp_path, demo_config):
    root = tmp_path / "p"
    shutil.copytree(e2e_project[0], root)  # copy2: the videos keep their mtimes, the features stay fresh
    cfg = lambda *sets: demo_config(root, *E2E, "stages.train.params.save_every=2",  # noqa: E731
                                    "stages.generate.params.steps=2", *sets)
    assert Runner(cfg()).run(["dynamics"], progress=False) == ["train", "dynamics"]  # save_every: a new train run
    run = root / "runs" / "mapper"
    kept = next(run.parent.glob("mapper.*"))  # the run without per-epoch weights, kept aside
    assert list(saved_epochs(run)) == [2, 3] and saved_epochs(kept) == {}  # every 2nd epoch and the last
    last = _weights(run / "last")
    for other in (_weights(saved_epochs(run)[3]), _weights(kept / "last")):  # keeping epochs changes no weight
        assert other.keys() == last.keys() and all((other[k] == last[k]).all() for k in last)
    assert any((_weights(saved_epochs(run)[2])[k] != last[k]).any() for k in last)

    out = run / "dynamics"
    record = json.loads((out / "_stage.json").read_text())
    ids = chosen_ids(run / "val_ids.txt", 32, 0)
    assert record["clips"] == ids and record["epochs"] == [2, 3] and record["complete"]
    for e in (2, 3):
        point = out / f"epoch-{e:04d}"
        assert sorted(p.stem for p in point.glob("*.wav")) == ids  # the listening samples
        m = json.loads((point / "metrics.json").read_text())
        assert m["epoch"] == e and m["fingerprint"] == record["fingerprint"] and m["counts"]["clips"] == len(ids)
        assert m["metrics"]["kl_passt"]["status"] == "ok"
    rows = list(csv.DictReader(open(out / "dynamics.csv")))
    assert [r["epoch"] for r in rows] == ["2", "3"]
    assert (out / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Runner(cfg()).status("dynamics") == (True, []) and Runner(cfg()).run(["dynamics"]) == []

    # resume: a lost point is the only one recomputed; the status says how far the stage got
    (out / "_stage.json").unlink()
    (out / "epoch-0002" / "metrics.json").unlink()
    before = (out / "epoch-0003" / "metrics.json").stat().st_mtime_ns
    assert Runner(cfg()).status("dynamics") == (False, ["1/2 epochs scored"])
    assert Runner(cfg()).run(["dynamics"], progress=False) == ["dynamics"]
    assert (out / "epoch-0003" / "metrics.json").stat().st_mtime_ns == before
    assert (out / "epoch-0002" / "metrics.json").exists()

    # its own settings and those of the stages it uses make it stale, not train
    for change in ("stages.generate.params.steps=3", "stages.dynamics.params.clips=1"):
        r = Runner(cfg(change))
        assert r.status("train") == (True, []) and r.status("dynamics") == (False, ["params changed"])
