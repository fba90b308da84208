"""The faster scheduler option (DPM-Solver++) beside the paper's DDIM, on the tiny seeded pipeline."""

import numpy as np
import pytest
import torch

from infer.audioldm2 import build_pipeline, generate_audio, set_scheduler
from infer.generate import GenerateParams


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline({"model": "tiny", "seed": 0, "gpt_dim": 32})
    p.set_progress_bar_config(disable=True)
    return p


def _gen(pipe, steps):
    tokens = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    return generate_audio(pipe, tokens, ["dog bow-wow", None], seed=[3, 4], steps=steps, audio_seconds=0.32)


def test_default_is_the_papers_ddim_and_options_are_checked(pipe):
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert GenerateParams().scheduler == "ddim" and GenerateParams().steps == 100
    with pytest.raises(ValueError, match="scheduler='euler'"):
        GenerateParams.from_dict({"scheduler": "euler"})
    with pytest.raises(ValueError, match="use one of"):
        set_scheduler(pipe, "euler")


def test_dpm_solver_follows_the_same_ode_in_fewer_steps(pipe):
    set_scheduler(pipe, "ddim")
    ref, ddim25 = _gen(pipe, 200), _gen(pipe, 25)  # DDIM (eta 0) with many steps: the probability-flow ODE
    set_scheduler(pipe, "dpm++")
    try:
        assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.beta_end == 0.0195
        dpm25 = _gen(pipe, 25)
        assert np.array_equal(dpm25, _gen(pipe, 25))  # deterministic
    finally:
        set_scheduler(pipe, "ddim")
    err = lambda x: float(np.abs(x - ref).mean())  # noqa: E731
    assert err(dpm25) < 0.5 * err(ddim25)  # second order: nearer the ODE's solution at equal cost
    assert err(dpm25) < 0.05 * float(np.abs(ref).mean())
