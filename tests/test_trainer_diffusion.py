"""Diff-Mapper (paper 4.4.3): sequence layout, objective, DDIM sampler against an oracle, seeds, training, loading."""

import pytest
import torch

from trainer.checkpoint import read_checkpoint
from trainer.config import TrainConfig
from trainer.diffusion_mapper import DiffusionMapper
from trainer.mapper import build_mapper, load_mapper, objective
from trainer.synthetic import write_synthetic_cache
from trainer.train import run

B, DC, W, Q, DT, D = 3, 16, 2, 4, 24, 32
DIMS = {"cavp_steps": 40, "cavp_dim": DC, "timechat_windows": W, "timechat_queries": Q, "timechat_dim": DT,
        "n_tokens": 8, "target_dim": D}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(**kw) -> DiffusionMapper:
    m = build_mapper(TrainConfig(model="tiny", mapper="diffusion", **kw), DIMS)
    assert isinstance(m, DiffusionMapper) and m.spec.kind == "diffusion"
    return m.eval()


def batch():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, 40, DC, generator=g), torch.randn(B, W, Q, DT, generator=g),
            torch.randn(B, 8, D, generator=g) * 2 + 1)


def test_sequence_is_timestep_visual_noisy_learnable_and_output_at_learnable_tokens():
    m = tiny()
    cavp, tc, x = batch()
    t = torch.tensor([0, 500, 999])
    got = m.denoise(cavp, tc, x, t)
    assert got.shape == (B, 8, D)
    temb = m.t_embed(m.t_proj(t))[:, None]  # (B, 1, D)
    seq = torch.cat([temb, m.fusion(cavp, tc), x, m.queries.expand(B, -1, -1)], 1)
    assert seq.shape[1] == 1 + 40 + 8 + 8
    want = m.backbone(inputs_embeds=seq).last_hidden_state[:, -8:]
    torch.testing.assert_close(got, want)
    x2 = x.clone()
    x2[:, 3] += torch.randn(B, D)
    assert (m.denoise(cavp, tc, x2, t) - got).abs().amax() > 1e-4  # the noisy tokens reach the prediction


@pytest.mark.parametrize("ptype", ["sample", "epsilon", "v_prediction"])
def test_objective_goal_matches_the_ddpm_forward_process(ptype):
    m = tiny(prediction_type=ptype)
    cavp, tc, target = batch()
    m.set_data_stats(target.mean(0), target.std())
    pred, goal = m(cavp, tc, target, generator=torch.Generator().manual_seed(5))
    assert pred.shape == goal.shape == (B, 8, D)
    g = torch.Generator().manual_seed(5)  # the same draws, recomputed here
    noise = torch.randn(B, 8, D, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    x0 = (target - target.mean(0)) / target.std()
    ab = m.train_sched.alphas_cumprod[t].view(B, 1, 1)
    want = {"sample": x0, "epsilon": noise, "v_prediction": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[ptype]
    torch.testing.assert_close(goal, want, rtol=1e-5, atol=1e-5)
    p2, g2 = objective(m, cavp, tc, target)
    assert p2.shape == g2.shape == (B, 8, D)


@pytest.mark.parametrize("ptype", ["sample", "epsilon"])
def test_ddim_sampler_with_an_oracle_denoiser_returns_the_clean_tokens(ptype, monkeypatch):
    m = tiny(prediction_type=ptype, sample_steps=10)
    cavp, tc, target = batch()
    m.set_data_stats(torch.zeros(8, D), 2.0)
    x0 = target / 2.0
    ab = m.train_sched.alphas_cumprod

    def oracle(a, b, xt, t):
        if ptype == "sample":
            return x0
        a_t = ab[t].view(-1, 1, 1)
        return (xt - a_t.sqrt() * x0) / (1 - a_t).sqrt()

    monkeypatch.setattr(m, "denoise", oracle)
    out = m.generate(cavp, tc, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target, rtol=1e-3, atol=1e-3)


def test_sampling_is_seeded_and_per_clip():
    m = tiny(sample_steps=5)
    cavp, tc, _ = batch()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = m.generate(cavp, tc, generator=gens([1, 2, 3]))
    assert a.shape == (B, 8, D)
    torch.testing.assert_close(m.generate(cavp, tc, generator=gens([1, 2, 3])), a, rtol=0, atol=0)
    alone = m.generate(cavp[1:2], tc[1:2], generator=gens([2]))
    torch.testing.assert_close(alone[0], a[1], rtol=1e-5, atol=1e-5)  # a clip's noise does not depend on its batch
    other = m.generate(cavp, tc, generator=gens([4, 5, 6]))
    assert (other - a).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="one per clip"):
        m.generate(cavp, tc, generator=gens([1]))


def test_learns_below_the_mean_token_baseline_and_round_trips(tmp_path):
    cache = tmp_path / "features.zarr"
    write_synthetic_cache(cache, n=96, shard_size=16, n_val=16, task="half")
    cfg = TrainConfig(model="tiny", mapper="diffusion", epochs=12, global_batch=8, lr=3e-3, sample_steps=10)
    s = run(cfg, cache=str(cache), out_dir=str(tmp_path / "run"), progress=False)
    final = s["final"]
    rows = read_checkpoint(tmp_path / "run" / "last", with_optimizer=False)["manifest"]["history"]
    first = rows[0]
    assert final["ar_mse"] < 0.5 * final["base_mse"], final  # sampled tokens beat the mean token
    assert final["val_loss"] < first["val_loss"]
    m = load_mapper(tmp_path / "run" / "best")
    assert isinstance(m, DiffusionMapper) and m.diff["sample_steps"] == 10
    assert m.data_std.item() != 1.0  # normalisation statistics travel with the weights
    cavp, tc = torch.randn(2, 40, 16), torch.randn(2, 2, 4, 24)
    g = lambda: [torch.Generator().manual_seed(i) for i in (0, 1)]  # noqa: E731
    out = m.generate(cavp.half(), tc.half(), generator=g())
    assert out.dtype == torch.float32 and out.shape == (2, 8, 32)
    torch.testing.assert_close(load_mapper(tmp_path / "run" / "best").generate(cavp, tc, generator=g()),
                               m.generate(cavp, tc, generator=g()))


def test_resume_repeats_the_noise_draws(tmp_path, monkeypatch):
    import trainer.train as tt

    cache = tmp_path / "features.zarr"
    write_synthetic_cache(cache, n=40, shard_size=8, n_val=6, task="half")
    cfg = TrainConfig(model="tiny", mapper="diffusion", global_batch=8, sample_steps=2, epochs=2)
    straight = run(cfg, cache=str(cache), out_dir=str(tmp_path / "b"), progress=False)
    real, calls = tt.evaluate, []

    def stop_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed after epoch 1's checkpoint
        return real(*a, **k)

    monkeypatch.setattr(tt, "evaluate", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, cache=str(cache), out_dir=str(tmp_path / "a"), progress=False)
    monkeypatch.setattr(tt, "evaluate", real)
    resumed = run(cfg, cache=str(cache), out_dir=str(tmp_path / "a"), progress=False)
    assert resumed["steps"] == straight["steps"]
    a = read_checkpoint(tmp_path / "a" / "last", with_optimizer=False)["weights"]
    b = read_checkpoint(tmp_path / "b" / "last", with_optimizer=False)["weights"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
