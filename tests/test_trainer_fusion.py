import pytest
import torch

from trainer.config import MapperSpec, TrainConfig
from trainer.fusion import Fusion, pool_timechat, upsample_time

B, T, DC, W, Q, DT, WIDTH = 3, 40, 16, 2, 4, 24, 32


def spec(**kw) -> MapperSpec:
    base = dict(encoders="both", fusion="concat", tc_pool="mean", upsample="nearest", cavp_steps=T, cavp_dim=DC,
                timechat_windows=W, timechat_queries=Q, timechat_dim=DT, n_tokens=8, target_dim=WIDTH,
                sos_eos=False, target_proj=False, gpt2_config={"n_embd": WIDTH}, timechat_stride=None)
    return MapperSpec(**{**base, **kw})


def inputs():
    return torch.randn(B, T, DC), torch.randn(B, W, Q, DT)


def test_pool_and_nearest_upsample_replicate_windows():
    cavp, tc = inputs()
    pooled = pool_timechat(tc, "mean")
    assert pooled.shape == (B, W, DT)
    torch.testing.assert_close(pooled, tc.mean(2))
    torch.testing.assert_close(pool_timechat(tc, "max"), tc.max(2).values)
    assert pool_timechat(tc, "none").shape == (B, W * Q, DT)
    up = upsample_time(pooled, T)  # (B, 40, DT)
    assert up.shape == (B, T, DT)
    for i in range(T):  # step i takes window floor(i W / T): 0..19 -> window 0, 20..39 -> window 1
        torch.testing.assert_close(up[:, i], pooled[:, i * W // T])
    win = upsample_time(pooled, T, "window", stride=32)  # windows [0, 32) and [32, 40)
    torch.testing.assert_close(win[:, :32], pooled[:, :1].expand(B, 32, DT))
    torch.testing.assert_close(win[:, 32:], pooled[:, 1:].expand(B, 8, DT))
    ten = torch.randn(B, 10, DT)  # the default window 4 / stride 4: both modes agree
    torch.testing.assert_close(upsample_time(ten, T, "window", stride=4), upsample_time(ten, T))
    up3 = upsample_time(torch.randn(B, 3, DT), T, "linear")
    assert up3.shape == (B, T, DT)


@pytest.mark.parametrize("encoders,fusion,tc_pool,steps", [
    ("both", "concat", "mean", T), ("both", "add", "mean", T), ("both", "cat", "mean", T + W),
    ("both", "cat", "none", T + W * Q), ("both", "concat", "max", T), ("cavp", "concat", "mean", T),
    ("timechat", "concat", "mean", T),
])
def test_every_variant_shape(encoders, fusion, tc_pool, steps):
    s = spec(encoders=encoders, fusion=fusion, tc_pool=tc_pool)
    cavp, tc = inputs()
    f = Fusion(s)
    out = f(cavp, tc)
    assert out.shape == (B, steps, WIDTH)
    assert s.prefix_len == steps
    # timechat pooled beforehand (as the in-memory loader does) gives the same result as raw
    torch.testing.assert_close(f(cavp, pool_timechat(tc, tc_pool)), out)


def test_concat_is_algorithm_1():
    s = spec()
    f = Fusion(s)
    cavp, tc = inputs()
    tc_up = tc.mean(2).repeat_interleave(T // W, dim=1)  # (B, 40, DT), independent replication
    want = torch.cat([cavp, tc_up], -1) @ f.proj.weight.T + f.proj.bias
    torch.testing.assert_close(f(cavp, tc), want)
    torch.testing.assert_close(f(cavp, tc.mean(2)), want)  # pre-pooled input accepted


def test_add_sums_aligned_streams_then_projects():
    s = spec(fusion="add")
    f = Fusion(s)
    cavp, tc = inputs()
    tc_up = tc.mean(2).repeat_interleave(T // W, dim=1)
    summed = torch.nn.functional.pad(cavp, (0, DT - DC)) + tc_up  # (B, 40, 24)
    torch.testing.assert_close(f(cavp, tc), summed @ f.proj.weight.T + f.proj.bias)
    s_eq = spec(fusion="add", timechat_dim=DC)
    f_eq = Fusion(s_eq)
    tc_eq = torch.randn(B, W, Q, DC)
    want = (cavp + tc_eq.mean(2).repeat_interleave(T // W, 1)) @ f_eq.proj.weight.T + f_eq.proj.bias
    torch.testing.assert_close(f_eq(cavp, tc_eq), want)


def test_cat_concatenates_along_time_without_alignment():
    f = Fusion(spec(fusion="cat"))
    cavp, tc = inputs()
    out = f(cavp, tc)
    torch.testing.assert_close(out[:, :T], f.proj(cavp))
    torch.testing.assert_close(out[:, T:], f.proj_tc(tc.mean(2)))


def test_config_rejects_bad_combinations():
    with pytest.raises(ValueError, match="fusion"):
        TrainConfig(fusion="sum")
    with pytest.raises(ValueError, match="tc_pool"):
        TrainConfig(tc_pool="none")
    with pytest.raises(ValueError, match="encoders='both'"):
        TrainConfig(encoders="cavp", fusion="add")
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    assert TrainConfig.from_dict({"lr": 1e-4}).lr == 1e-4
    c = TrainConfig()
    assert (c.lr, c.epochs, c.global_batch, c.loss) == (1e-3, 40, 48, "mse")
    assert c.accumulation(3) == (16, 1)
    assert TrainConfig(micro_batch=8).accumulation(3) == (8, 2)
    with pytest.raises(ValueError, match="multiple"):
        TrainConfig(micro_batch=5).accumulation(1)
