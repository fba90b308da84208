import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import read_checkpoint, saved_epochs
from trainer.config import TrainConfig
from trainer.mapper import load_mapper
from trainer.synthetic import write_synthetic_cache
from trainer.train import run

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def weights(folder) -> dict:
    return read_checkpoint(folder, with_optimizer=False)["weights"]


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "features.zarr"
    write_synthetic_cache(path, n=40, shard_size=8, n_val=6, task="half")
    return str(path)


def test_learns_flash_time_well_below_mean_baseline(tmp_path):
    cache = tmp_path / "features.zarr"
    write_synthetic_cache(cache, n=96, shard_size=16, n_val=16, task="half")
    cfg = TrainConfig(model="tiny", epochs=12, global_batch=8, lr=3e-3, seed=0)
    s = run(cfg, cache=str(cache), out_dir=str(tmp_path / "run"), progress=False)
    final = s["final"]
    assert final["tf_mse"] < 0.3 * final["base_mse"], final
    assert final["ar_mse"] < 0.3 * final["base_mse"], final  # token 0 comes from the video alone
    assert final["ar_cos"] > final["base_cos"]
    assert len(final["tf_cos_per_token"]) == 8
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    best = read_checkpoint(tmp_path / "run" / "best", with_optimizer=False)
    assert best["manifest"]["best_val"] == min(float(r["val_loss"]) for r in rows)
    assert TrainConfig.from_dict(best["config"]) == cfg
    assert load_mapper(tmp_path / "run" / "best").spec.target_dim == 32
    assert (tmp_path / "run" / "last" / "config.json").is_file()
    assert s["timing"]["data_share"] < 0.5 and s["data_mode"] == "memory"


def test_resume_refuses_changed_params(small_cache, tmp_path):
    cfg = TrainConfig(model="tiny", epochs=1, global_batch=8)
    up = {"cavp": "synthetic-cavp-0", "timechat": "synthetic-timechat-0", "audiomae": "synthetic-audiomae-0"}
    run(cfg, cache=small_cache, out_dir=str(tmp_path), progress=False, upstream_fingerprints=up)
    assert read_checkpoint(tmp_path / "last")["manifest"]["run_id"]["upstream_fingerprints"] == up
    with pytest.raises(ValueError, match="cavp is stale"):
        run(cfg, cache=small_cache, out_dir=str(tmp_path), progress=False,
            upstream_fingerprints={**up, "cavp": "newer"})
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        run(TrainConfig(model="tiny", epochs=1, global_batch=8, lr=5e-4), cache=small_cache, out_dir=str(tmp_path),
            progress=False)
    s = run(TrainConfig(model="tiny", epochs=1, global_batch=8, lr=5e-4), cache=small_cache, out_dir=str(tmp_path),
            progress=False, resume=False)  # starting over is allowed
    assert s["epochs_done"] == 1


def test_save_every_keeps_epoch_weights_and_changes_nothing_else(small_cache, tmp_path):
    """save_every: k keeps <run>/epochs/epoch-NNNN/ after epochs k, 2k, ... and the last (weights only); the run's
    weights are those of a run without it; starting over clears them."""
    base = dict(model="tiny", epochs=5, global_batch=8, lr=2e-3, dropout=0.1)
    run(TrainConfig(**base, save_every=2), cache=small_cache, out_dir=str(tmp_path / "a"), progress=False)
    run(TrainConfig(**base), cache=small_cache, out_dir=str(tmp_path / "b"), progress=False)
    kept = saved_epochs(tmp_path / "a")
    assert list(kept) == [2, 4, 5] and saved_epochs(tmp_path / "b") == {}
    for e, folder in kept.items():
        ck = read_checkpoint(folder)
        assert ck["manifest"]["epoch"] == e and ck["train_state"] is None
    last, other = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert all(torch.equal(last[k], other[k]) for k in last) and all(torch.equal(last[k], v)
                                                                      for k, v in weights(kept[5]).items())
    assert not all(torch.equal(last[k], v) for k, v in weights(kept[2]).items())
    run(TrainConfig(**{**base, "epochs": 1}, save_every=2), cache=small_cache, out_dir=str(tmp_path / "a"),
        progress=False, resume=False)
    assert list(saved_epochs(tmp_path / "a")) == [1]  # the last epoch; the older run's epochs are gone


KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[4]))
from trainer.config import TrainConfig
from trainer.train import run
cfg = TrainConfig.from_dict(eval(sys.argv[3]))
run(cfg, cache=sys.argv[1], out_dir=sys.argv[2], progress=False)
"""


def kill_params():
    return {"model": "tiny", "epochs": 4, "global_batch": 4, "lr": 2e-3, "ckpt_every_steps": 2, "dropout": 0.1,
            "schedule": "cosine", "warmup_steps": 3, "grad_clip": 1.0}


def test_resume_after_sigkill_ends_with_same_weights(small_cache, tmp_path):
    params = kill_params()
    threads = str(torch.get_num_threads())
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, small_cache, str(out), repr(params), threads],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)
    manifest = out / "last" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait for a mid-training checkpoint past epoch 1
        if manifest.is_file():
            try:
                m = read_checkpoint(out / "last", with_optimizer=False)["manifest"]
            except FileNotFoundError:  # the trainer replaced that checkpoint while we read it: poll again
                continue
            if m["epoch"] >= 1 and m["batch"] > 0:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    killed_at = read_checkpoint(out / "last", with_optimizer=False)["manifest"]["step"]

    resumed = run(TrainConfig.from_dict(params), cache=small_cache, out_dir=str(out), progress=False)
    straight = run(TrainConfig.from_dict(params), cache=small_cache, out_dir=str(tmp_path / "straight"),
                   progress=False)
    assert resumed["steps"] == straight["steps"] > killed_at
    a, b = weights(out / "last"), weights(tmp_path / "straight" / "last")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed["final"]["val_loss"] == straight["final"]["val_loss"]
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cache, out, params):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    run(TrainConfig.from_dict(params), cache=cache, out_dir=out, progress=False)


def test_ddp_two_processes_equal_one_process(small_cache, tmp_path):
    import torch.multiprocessing as mp

    params = {"model": "tiny", "epochs": 1, "global_batch": 8, "micro_batch": 2, "lr": 1e-3, "grad_clip": 1.0}
    mp.spawn(_ddp_worker, args=(2, _free_port(), small_cache, str(tmp_path / "ddp"), params), nprocs=2, join=True)
    single = run(TrainConfig.from_dict(params), cache=small_cache, out_dir=str(tmp_path / "one"), progress=False)
    assert single["accumulation"] == 4 and single["world_size"] == 1
    ddp = read_checkpoint(tmp_path / "ddp" / "last", with_optimizer=False)
    assert ddp["manifest"]["world_size"] == 2 and ddp["manifest"]["step"] == single["steps"] > 1
    a, b = ddp["weights"], weights(tmp_path / "one" / "last")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    first = load_file(str(next((tmp_path / "one" / "last").glob("model-*.safetensors"))))
    assert set(first) == set(b)
