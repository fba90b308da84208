"""CAVP video encoder: checkpoint layout, loading, an independent functional forward, temporal mixing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from frozen import cavp
from frozen.cavp import CAVPConfig, CAVPVideoEncoder, build, init_tiny_weights_, load_cavp_state_dict



def tiny_model(seed: int = 0) -> CAVPVideoEncoder:
    return init_tiny_weights_(CAVPVideoEncoder(CAVPConfig.tiny()), seed).eval()


def clips(b: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 40, 224, 224, 3), dtype=torch.uint8, generator=g)  # (B, 40, 224, 224, 3)


def write_released_format(model: CAVPVideoEncoder, path: Path, drop: str | None = None) -> None:
    """{"state_dict": {"module.<key>": ...}} plus the keys a CAVP checkpoint has that we do not use."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items() if k != drop}
    sd["module.spec_encoder.foo"] = torch.zeros(3)
    sd["module.logit_scale"] = torch.tensor(2.0)
    torch.save({"state_dict": sd, "epoch": 66}, path)


# (a) the full model reproduces the released key list, in order, shape for shape
def test_full_state_dict_matches_reference_keys(meta_keys, reference_keys):
    mine = meta_keys(lambda: CAVPVideoEncoder(CAVPConfig.full()))
    ref = reference_keys("cavp_video_keys")  # derived from the reference code (docs/models.md)
    assert len(ref) == 320
    assert mine == ref
    assert CAVPConfig.full().feat_dim == 2048


# (b) a tiny checkpoint in the released format loads through build() and reproduces the source model
def test_tiny_checkpoint_roundtrip_through_build(tmp_path, monkeypatch, caplog):
    source = tiny_model(seed=3)
    ckpt = tmp_path / "cavp_epoch66.ckpt"
    write_released_format(source, ckpt)
    monkeypatch.setattr(cavp, "CAVPConfig", _TinyAsFull)  # build 'full' with tiny sizes
    with caplog.at_level(logging.INFO, logger="frozen.cavp"):
        enc = build({"model": "full", "checkpoint": str(ckpt)})
    assert "spec_encoder" in caplog.text
    assert enc.info.checkpoint["size"] == ckpt.stat().st_size
    x = clips(1)
    got = enc.encode(x, torch.tensor([40]))
    with torch.no_grad():
        want = source(x.permute(0, 1, 4, 2, 3).float() / 255.0)  # (1, 40, 3, 224, 224) -> (1, 40, D)
    assert got.dtype == torch.float32 and got.shape == (1, 40, 32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


class _TinyAsFull(CAVPConfig):
    @classmethod
    def full(cls) -> CAVPConfig:
        return CAVPConfig.tiny()


def test_loader_accepts_flat_and_safetensors_and_rejects_missing(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    source = tiny_model(seed=4)
    flat = tmp_path / "flat.pt"
    torch.save({**source.state_dict(), "logit_scale": torch.tensor(1.0)}, flat)
    st = tmp_path / "w.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(st))
    for path in (flat, st):
        sd = load_cavp_state_dict(path)
        assert sorted(sd) == sorted(source.state_dict())
    bad = tmp_path / "missing.ckpt"
    write_released_format(source, bad, drop="video_encoder.layer3.0.conv1.conv.weight")
    monkeypatch.setattr(cavp, "CAVPConfig", _TinyAsFull)
    with pytest.raises(RuntimeError, match=r"layer3\.0\.conv1\.conv\.weight"):
        build({"model": "full", "checkpoint": str(bad)})
    with pytest.raises(FileNotFoundError):
        build({"model": "full", "checkpoint": str(tmp_path / "nope.ckpt")})


def test_hub_id_resolved_with_hf_hub_download(tmp_path, monkeypatch):
    source = tiny_model(seed=5)
    ckpt = tmp_path / "cavp_epoch66.ckpt"
    write_released_format(source, ckpt)
    calls = []

    def fake_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename))
        return str(ckpt)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(cavp, "CAVPConfig", _TinyAsFull)
    enc = build({"model": "full", "checkpoint": "SimianLuo/Diff-Foley"})
    assert calls == [("SimianLuo/Diff-Foley", "diff_foley_ckpt/cavp_epoch66.ckpt")]
    assert enc.info.checkpoint["hub_repo"] == "SimianLuo/Diff-Foley"


# (c) unit norms, one output per input frame, contract fields
def test_encode_shapes_norms_and_info():
    enc = build({"model": "tiny", "seed": 0})
    out = enc.encode(clips(2), torch.tensor([40, 17]))
    assert out.shape == (2, 40, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 40))
    assert enc.info.name == "cavp" and enc.info.input_kind == "frames" and enc.info.output_shape == (40, 32)
    assert enc.info.checkpoint == {"tiny_seed": 0} and enc.info.config["depths"] == (1, 1, 1, 1)
    with torch.no_grad():
        small = tiny_model()(torch.rand(1, 7, 3, 64, 64))  # any T, any size
    assert small.shape == (1, 7, 32)
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(clips(1).float(), torch.tensor([40]))
    with pytest.raises(ValueError, match="half"):
        build({"model": "tiny", "half": True}, device="cpu")


def test_chunks_are_encoded_independently():
    x = clips(1)
    whole = build({"model": "tiny", "chunk_frames": 40}).encode(x, torch.tensor([40]))
    chunked = build({"model": "tiny", "chunk_frames": 20}).encode(x, torch.tensor([40]))
    model = build({"model": "tiny", "chunk_frames": 40}).model
    second_alone = model(x[:, 20:].permute(0, 1, 4, 2, 3) / 255.0)  # (1, 20, 3, 224, 224) -> (1, 20, D)
    torch.testing.assert_close(chunked[:, 20:], second_alone.detach())
    assert not torch.allclose(whole[:, 19:21], chunked[:, 19:21])  # the chunk border cuts temporal mixing


def test_the_clip_grid_sets_the_frame_count():
    """CAVP has no temporal stride: an 8-FPS grid (80 frames) gives 80 features, the reference's 40-frame chunks
    each encoded on their own; frames of another size than the released model's are refused at build."""
    from frozen.grid import ClipGrid

    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (1, 80, 224, 224, 3), dtype=torch.uint8, generator=g)  # (1, 80, 224, 224, 3)
    enc = build({"model": "tiny"}, grid=ClipGrid(fps=8, seconds=10.0))
    out = enc.encode(x, torch.tensor([80]))
    assert out.shape == (1, 80, 32) and enc.info.output_shape == (80, 32)
    with torch.no_grad():
        halves = [enc.model(x[:, s:s + 40].permute(0, 1, 4, 2, 3) / 255.0) for s in (0, 40)]  # (1, 40, D) each
    torch.testing.assert_close(out, torch.cat(halves, dim=1))
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(clips(1), torch.tensor([40]))
    with pytest.raises(ValueError, match="224"):
        build({"model": "tiny"}, grid=ClipGrid(size=256))


# (d) determinism
def test_seed_determinism():
    a, b, c = (build({"model": "tiny", "seed": s}) for s in (0, 0, 1))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    x = clips(1)
    ya, yb, yc = (e.encode(x, torch.tensor([40])) for e in (a, b, c))
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yc)


# (e) an independent forward from the state dict alone, with the strides and paddings of docs/models.md section 2
def functional_forward(sd: dict, cfg: CAVPConfig, frames: torch.Tensor) -> torch.Tensor:
    def conv_bn(x, prefix, stride, padding, relu):
        x = F.conv3d(x, sd[f"{prefix}.conv.weight"], stride=stride, padding=padding)
        x = F.batch_norm(x, sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"],
                         sd[f"{prefix}.bn.weight"], sd[f"{prefix}.bn.bias"], training=False, eps=1e-5)
        return F.relu(x) if relu else x

    x = frames.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
    x = conv_bn(x, "video_encoder.conv1", (1, 2, 2), (0, 3, 3), True)
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            p = f"video_encoder.layer{i + 1}.{j}"
            s = (1, 2, 2) if (i > 0 and j == 0) else (1, 1, 1)
            t_pad = (1, 0, 0) if i >= 2 else (0, 0, 0)
            assert sd[f"{p}.conv1.conv.weight"].shape[2] == (3 if i >= 2 else 1)
            out = conv_bn(x, f"{p}.conv1", 1, t_pad, True)
            out = conv_bn(out, f"{p}.conv2", s, (0, 1, 1), True)
            out = conv_bn(out, f"{p}.conv3", 1, 0, False)
            identity = conv_bn(x, f"{p}.downsample", s, 0, False) if f"{p}.downsample.conv.weight" in sd else x
            x = F.relu(out + identity)
    feat = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, C)
    proj = feat @ sd["video_project_head.weight"].T + sd["video_project_head.bias"]  # (B, T, D)
    return proj / proj.norm(dim=-1, keepdim=True)


def test_matches_functional_forward():
    cfg = CAVPConfig(depths=(2, 1, 2, 1), base_width=8, proj_dim=16)  # >1 block exercises identity shortcuts
    model = init_tiny_weights_(CAVPVideoEncoder(cfg), seed=7).eval()
    x = torch.rand(2, 5, 3, 65, 47)  # odd sizes catch wrong paddings
    with torch.no_grad():
        got = model(x)
    want = functional_forward(model.state_dict(), cfg, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_temporal_mixing_only_in_layer3_and_layer4():
    model = tiny_model(seed=2)
    feats = {}
    for name in ("layer2", "layer3", "layer4"):
        getattr(model.video_encoder, name).register_forward_hook(lambda m, i, o, name=name: feats.__setitem__(name, o))
    x = torch.rand(1, 9, 3, 64, 64)
    y = x.clone()
    y[:, 4] = torch.rand(3, 64, 64)  # change frame 4 only
    with torch.no_grad():
        out_x = model(x)
        fx = dict(feats)
        out_y = model(y)
        fy = dict(feats)

    def changed(a, b):  # (B, C, T, h, w) -> which frames differ
        return [t for t in range(a.shape[2]) if not torch.allclose(a[:, :, t], b[:, :, t], rtol=0, atol=1e-7)]

    assert changed(fx["layer2"], fy["layer2"]) == [4]  # layers 1-2: frame-wise
    assert changed(fx["layer3"], fy["layer3"]) == [3, 4, 5]  # layer3 kernel 3 reaches the neighbours
    assert changed(fx["layer4"], fy["layer4"]) == [2, 3, 4, 5, 6]  # layer4 one further
    diff = (out_x - out_y).abs().amax(dim=-1)[0]
    assert (diff[[0, 1, 7, 8]] == 0).all() and (diff[2:7] > 0).all()
