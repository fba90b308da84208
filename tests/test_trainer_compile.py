"""torch.compile'd training gives the eager losses (CPU, tiny mapper); the compile option's defaults."""

from __future__ import annotations

import contextlib
import shutil

import pytest
import torch

from trainer.config import TrainConfig
from trainer.mapper import build_mapper
from trainer.train import compile_mode, maybe_compile, train_step

DIMS = {"cavp_steps": 40, "cavp_dim": 16, "timechat_windows": 2, "timechat_queries": 4, "timechat_dim": 24,
        "n_tokens": 8, "target_dim": 32, "timechat_stride": None}


def _losses(cfg: TrainConfig, steps: int = 4) -> list[float]:
    mapper = build_mapper(cfg, DIMS)
    model = maybe_compile(mapper, cfg, torch.device("cpu"))
    params = [p for p in mapper.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batch = (torch.randn(6, 40, 16, generator=g), torch.randn(6, 2, 4, 24, generator=g),
                 torch.randn(6, 8, 32, generator=g))
        losses.append(train_step(model, opt, sched, params, cfg, [batch], contextlib.nullcontext(), ddp=False))
    return [float(x) for x in losses]  # read once, at the end


def test_compile_mode_defaults():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert compile_mode(TrainConfig(model="tiny"), cpu) is None  # auto: eager on CPU
    assert compile_mode(TrainConfig(model="tiny"), cuda) == "default"
    assert compile_mode(TrainConfig(model="tiny", compile="off"), cuda) is None
    assert compile_mode(TrainConfig(model="tiny", compile="reduce-overhead"), cpu) == "reduce-overhead"
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(model="tiny", compile="fast")


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile (inductor) on CPU needs a C++ compiler, none on PATH")
def test_compiled_training_matches_eager():
    eager = _losses(TrainConfig(model="tiny", compile="off", lr=1e-2))
    compiled = _losses(TrainConfig(model="tiny", compile="default", lr=1e-2))
    assert eager[-1] < eager[0] * 1.5  # it trains (not a constant)
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-6)
