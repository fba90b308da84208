"""Training logs: one rounded INFO line per epoch, no progress bar in a redirected log, optional TensorBoard."""

from __future__ import annotations

import logging
import re
import sys
import types

import pytest
import torch

from trainer import logs
from trainer.config import TrainConfig
from trainer.synthetic import write_synthetic_cache
from trainer.train import run


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "features.zarr"
    write_synthetic_cache(path, n=24, shard_size=8, n_val=4, task="half")
    return str(path)


def test_one_rounded_line_per_epoch_and_no_bar_off_a_terminal(cache, tmp_path, caplog, capsys):
    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO, logger="trainer.train"):
        run(TrainConfig(model="tiny", epochs=3, global_batch=4), cache=cache, out_dir=str(tmp_path / "r"),
            progress=True)  # asked for, but stderr is not a terminal under pytest
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    for ln in lines:
        for number in re.findall(r"\d+\.\d+(?:e-?\d+)?", ln):
            assert len(number.split("e")[0].replace(".", "").lstrip("0")) <= 5, ln
    err = capsys.readouterr().err
    assert not re.search(r"\d+/\d+ \[\d\d:\d\d", err), err  # no tqdm bar ("2/2 [00:01<00:00, ...]")


def test_g5_and_epoch_line():
    assert logs.g5(0.05304378876462579) == "0.053044" and logs.g5(None) == "-" and logs.g5(123456.7) == "1.2346e+05"
    line = logs.epoch_line({"epoch": 2, "train_loss": 0.123456789, "val_loss": None, "seconds": 1.23456}, 40)
    assert line.startswith("epoch 2/40: train 0.12346 val - (") and line.endswith(" 1.2346 s")


def test_tensorboard_is_opt_in_and_gets_the_csv_scalars(cache, tmp_path, monkeypatch):
    got = []

    class FakeWriter:
        def __init__(self, logdir):
            got.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            got.append((tag, step))

        def flush(self):
            pass

        def close(self):
            got.append(("closed", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    run(TrainConfig(model="tiny", epochs=1, global_batch=4), cache=cache, out_dir=str(tmp_path / "off"), progress=False)
    assert got == []  # off by default
    run(TrainConfig(model="tiny", epochs=2, global_batch=4, tensorboard=True), cache=cache,
        out_dir=str(tmp_path / "on"), progress=False)
    assert got[0] == ("dir", str(tmp_path / "on" / "tb")) and got[-1] == ("closed", None)
    assert {("val_loss", 1), ("val_loss", 2), ("train_loss", 2), ("tf_cos", 1)} <= set(got)
