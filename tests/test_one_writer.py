"""One writer per output, decided before anything moves (issue 22).

A training run is started in a process of its own (a tiny mapper, on a synthetic cache, with more epochs than it will
ever finish); while it trains, a second ``v2a run train`` with another learning rate, then one with the same params,
must be refused with one line naming the first's pid, and the first's folder, lock and checkpoints must be where
they were. Once the first is gone, the second sets the first's run aside (whole) and trains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.checkpoint import read_checkpoint
from trainer.synthetic import write_synthetic_cache
from v2a.io import LockedError, folder_lock, read_json

REPO = Path(__file__).resolve().parent.parent


def _project(root: Path) -> Path:
    """An overlay on stages.yaml + configs/demo.yaml: every path under ``root``, the train stage alone on a synthetic
    cache (no upstream stage: the cache is written here)."""
    write_synthetic_cache(root / "cache" / "features.zarr", n=40, shard_size=8, n_val=6, task="half")
    over = root / "over.yaml"
    over.write_text(f"paths: {{videos: {root / 'videos'}, labels: null, cache: {root / 'cache'}, "
                    f"runs: {root / 'runs'}, outputs: {root / 'out'}}}\n"
                    "stages:\n  train:\n    needs: []\n"
                    "    params: {model: tiny, epochs: 100000, global_batch: 8, subset_fraction: 1.0}\n")
    return over


def _cli(over: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "--no-progress", "-c", str(REPO / "stages.yaml"),
            "-c", str(REPO / "configs" / "demo.yaml"), "-c", str(over), *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 300.0) -> None:
    """Until ``path`` exists (the first run has committed a checkpoint); fail if the process ends first."""
    end = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the first training ended (rc {proc.returncode}) before {path} appeared:\n{out[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"{path} did not appear")
        time.sleep(0.2)


def _snapshot(run: Path) -> dict:
    return {"started": read_json(run / "_started.json"), "lock": (run.parent / ".mapper.lock").read_text(),
            "siblings": sorted(p.name for p in run.parent.iterdir())}


def test_a_second_training_is_refused_and_moves_nothing(tmp_path):
    over = _project(tmp_path)
    run = tmp_path / "runs" / "mapper"
    first = subprocess.Popen(_cli(over, "run", "train"), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(run / "last" / "manifest.json", first)
        before = _snapshot(run)
        assert before["lock"] == str(first.pid)
        assert before["siblings"] == [".mapper.lock", "mapper"]
        for changed in (["--set", "stages.train.params.lr=0.001"], []):  # other params; the same params
            second = subprocess.run(_cli(over, *changed, "run", "train"), cwd=tmp_path, env=_env(),
                                    capture_output=True, text=True, timeout=300)
            assert second.returncode != 0
            lines = [ln for ln in second.stderr.splitlines() if "pid" in ln]
            assert len(lines) == 1 and f"pid {first.pid}" in lines[0], second.stderr
            assert "Traceback" not in second.stderr and "keeping the previous run" not in second.stderr
            assert _snapshot(run) == before  # nothing moved, the lock is the first's
            assert first.poll() is None  # the first trains on
        ck = read_checkpoint(run / "last", with_optimizer=False)
        assert ck["config"]["lr"] == 3.0e-3  # the first's params (demo.yaml), in the first's folder
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the first is gone (SIGKILL: its lock with it): the second sets the first's run aside, whole, and trains
    kept_epoch = read_checkpoint(run / "last", with_optimizer=False)["manifest"]["epoch"]
    second = subprocess.run(_cli(over, "--set", "stages.train.params.lr=0.001", "--set",
                                 "stages.train.params.epochs=1", "run", "train"),
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("mapper.")]
    assert len(kept) == 1 and kept[0].name == f"mapper.{before['started']['fingerprint']}"
    assert read_json(kept[0] / "_started.json") == before["started"]
    assert read_checkpoint(kept[0] / "last", with_optimizer=False)["manifest"]["epoch"] == kept_epoch
    assert read_checkpoint(run / "last", with_optimizer=False)["config"]["lr"] == 0.001
    assert read_json(run / "_stage.json")["complete"]


def test_the_run_lock_lives_beside_the_run(tmp_path):
    """The lock ``.mapper.lock`` is beside ``mapper/``: renaming the run folder does not release or move it."""
    run = tmp_path / "mapper"
    run.mkdir()
    with folder_lock(run, "the mapper run"):
        os.replace(run, tmp_path / "mapper.old")
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with folder_lock(run, "the mapper run"):
                pass
    assert (tmp_path / ".mapper.lock").read_text() == str(os.getpid())
