"""frozen/blocks.py against hand computations (explicit matrix products, erf GELU, LayerNorm by its formula)."""

import math

import pytest
import torch

from frozen import blocks as B


def _randomise(module, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def _heads(t, h):  # (N, T, C) -> (N, h, T, C/h)
    n, T, c = t.shape
    return t.view(n, T, h, c // h).transpose(1, 2)


def _attend(q, k, v, mask=None):  # plain scaled dot-product attention over heads
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = s.softmax(-1) @ v  # (N, h, T, d)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _mlp(x, mlp):
    h = x @ mlp.fc1.weight.T + mlp.fc1.bias
    return (0.5 * h * (1 + torch.erf(h / math.sqrt(2)))) @ mlp.fc2.weight.T + mlp.fc2.bias


def _fused_attention(x, a, h):
    c = x.shape[-1]
    w = a.qkv.weight
    bias = a.qkv.bias if a.qkv.bias is not None else torch.cat([a.q_bias, torch.zeros(c), a.v_bias])
    q, k, v = (x @ w[i * c:(i + 1) * c].T + bias[i * c:(i + 1) * c] for i in range(3))
    return _attend(_heads(q, h), _heads(k, h), _heads(v, h)) @ a.proj.weight.T + a.proj.bias


def test_mlp_is_fc2_erf_gelu_fc1():
    m = _randomise(B.Mlp(6, 10))
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _mlp(x, m), rtol=1e-5, atol=1e-6)
    assert list(m.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


@pytest.mark.parametrize("qv_bias", [False, True])
def test_fused_attention_matches_hand_computation(qv_bias):
    a = _randomise(B.Attention(8, 2, qkv_bias=not qv_bias, qv_bias=qv_bias), seed=1)
    keys = ["q_bias", "v_bias", "qkv.weight", "proj.weight", "proj.bias"] if qv_bias else \
        ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    assert list(a.state_dict()) == keys  # timm / EVA names and order
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(a(x), _fused_attention(x, a, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sdpa", [True, False])
def test_split_attention_self_and_cross_match_hand_computation(sdpa):
    a = _randomise(B.SplitAttention(8, 4, proj=True, sdpa=sdpa), seed=2)
    x = torch.randn(2, 5, 8)
    lin = lambda t, m: t @ m.weight.T + m.bias  # noqa: E731
    with torch.no_grad():
        want = lin(_attend(_heads(lin(x, a.query), 4), _heads(lin(x, a.key), 4), _heads(lin(x, a.value), 4)), a.proj)
        torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
    cross = _randomise(B.SplitAttention(8, 2, kv_dim=6), seed=3)
    mem, mask = torch.randn(2, 7, 6), torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    with torch.no_grad():
        want = _attend(_heads(lin(x, cross.query), 2), _heads(lin(mem, cross.key), 2), _heads(lin(mem, cross.value), 2),
                       mask)
        torch.testing.assert_close(cross(x, mem, mask), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cross(x[1:], mem[1:, :4])[0], want[1], rtol=1e-5, atol=1e-5)  # mask = dropping keys


def test_split_attention_order_and_errors():
    gpt = B.SplitAttention(8, 2, proj=True, sdpa=False, order=("key", "query", "value"))
    assert [k for k in gpt.state_dict() if k.endswith("weight")] == ["key.weight", "query.weight", "value.weight",
                                                                     "proj.weight"]
    with pytest.raises(ValueError, match="sdpa=True"):
        gpt(torch.randn(1, 3, 8), key_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="order"):
        B.SplitAttention(8, 2, order=("query", "query", "value"))


@pytest.mark.parametrize("bias_kv", [False, True])
def test_self_attention_is_torch_multihead_attention(bias_kv):
    torch.manual_seed(0)
    ours = B.SelfAttention(8, 2, add_bias_kv=bias_kv).eval()
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, 2, add_bias_kv=bias_kv, batch_first=True).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x, x, x, need_weights=False)[0])
        if not bias_kv:  # the projections by hand
            w, b = ours.in_proj_weight, ours.in_proj_bias
            q, k, v = (_heads(x @ w[i * 8:(i + 1) * 8].T + b[i * 8:(i + 1) * 8], 2) for i in range(3))
            want = _attend(q, k, v) @ ours.out_proj.weight.T + ours.out_proj.bias
            torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-5)


def test_block_is_pre_norm_residual_with_timm_names():
    blk = _randomise(B.Block(8, 2, 16, eps=1e-6), seed=4)
    assert list(blk.state_dict())[:2] == ["norm1.weight", "norm1.bias"]
    assert [k.split(".")[0] for k in blk.state_dict()] == ["norm1"] * 2 + ["attn"] * 4 + ["norm2"] * 2 + ["mlp"] * 4
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        h = x + _fused_attention(_layer_norm(x, blk.norm1), blk.attn, 2)
        want = h + _mlp(_layer_norm(h, blk.norm2), blk.mlp)
        torch.testing.assert_close(blk(x), want, rtol=1e-4, atol=1e-5)
