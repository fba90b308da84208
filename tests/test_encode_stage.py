"""Encoder stages into zarr with the tiny models: layout, values, rerun-one-encoder, resume of one shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline.demo_data import make_demo_clips
from frozen import audiomae, cavp
from pipeline.framestore import iter_shard
from v2a.runner import Runner



ENCODE = ("stages.frames.params.shard_size=3",)  # 7 clips -> shards of 3, 3, 1


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, demo_config):
    root = tmp_path_factory.mktemp("enc")
    specs = make_demo_clips(root / "videos", n=7, seed=5)
    ran = Runner(demo_config(root, *ENCODE)).run(["extract"], progress=False)
    assert ran == ["frames", "cavp", "timechat", "audiomae"]
    return root, specs


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_layout_read_by_plain_zarr(extracted):
    root, specs = extracted
    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r")
    n = len(specs)
    assert z["meta/id"].shape == (n,)
    for name, shape in (("cavp", (40, 32)), ("timechat", (10, 32, 32)), ("audiomae", (8, 32))):
        g = z[name]
        assert g["emb"].shape == (n, *shape) and g["emb"].dtype == np.float16
        assert g["emb"].chunks == (3, *shape)
        assert g["done"].shape == (3,) and g["done"][:].tolist() == [1, 1, 1]
        a = dict(g.attrs)
        assert a["encoder"] == name and a["complete"] is True and a["dims"] == list(shape)
        assert a["fps"] == 4 and a["checkpoint"] == {"tiny_seed": 0} and len(a["fingerprint"]) == 16
    has_audio = z["meta/has_audio"][:]
    assert not has_audio.all()
    assert (z["audiomae/valid"][:] == has_audio).all()
    assert not z["audiomae/emb"][:][~has_audio].any()  # no target for the clip without audio


def test_cached_values_equal_direct_encoding(extracted):
    root, _ = extracted
    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r")
    clips = list(iter_shard(root / "cache" / "frames", 1))
    idx = [c.index for c in clips]
    enc = cavp.build({"model": "tiny", "seed": 0})
    want = enc.encode(torch.from_numpy(np.stack([c.frames for c in clips])),
                      torch.tensor([c.meta["n_frames"] for c in clips])).numpy()
    np.testing.assert_allclose(z["cavp/emb"][idx[0]: idx[-1] + 1].astype(np.float32), want, atol=2e-3)
    am = audiomae.build({"model": "tiny", "seed": 0})
    usable = [c for c in clips if c.meta["has_audio"]]
    want = am.encode(torch.from_numpy(np.stack([c.audio for c in usable])),
                     torch.tensor([c.meta["audio_len"] for c in usable])).numpy()
    got = np.stack([z["audiomae/emb"][c.index] for c in usable]).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_changing_one_encoder_reruns_only_that_encoder(extracted, tmp_path, demo_config):
    root = copy_project(extracted[0], tmp_path / "p")
    store = root / "cache" / "features.zarr"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "timechat" not in p.parts}
    r = Runner(demo_config(root, *ENCODE, "stages.timechat.params.window=8", "stages.timechat.params.stride=8"))
    status = {n: r.status(n) for n in ("frames", "cavp", "timechat", "audiomae")}
    assert status["timechat"] == (False, ["params changed"])
    assert all(status[n][0] for n in ("frames", "cavp", "audiomae"))
    assert r.run(["extract"], progress=False) == ["timechat"]
    z = zarr.open_group(str(store), mode="r")
    assert z["timechat/emb"].shape[1] == 5  # 40 frames / window 8
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # frames, meta, cavp and audiomae files untouched


def test_resume_recomputes_only_unfinished_shards(extracted, tmp_path, monkeypatch, demo_config):
    root = copy_project(extracted[0], tmp_path / "p")
    store = zarr.open_group(str(root / "cache" / "features.zarr"), mode="a")
    ref = store["cavp/emb"][:]
    store["cavp/done"][1] = 0  # as if killed before shard 1 was marked done
    store["cavp/emb"][3:6] = np.zeros((3, 40, 32), np.float16)  # ...with garbage in its chunk
    store["cavp"].attrs["complete"] = False
    r = Runner(demo_config(root, *ENCODE))
    fresh, why = r.status("cavp")
    assert not fresh and why == ["2/3 shards done"]
    seen = []
    orig = cavp.CAVPEncoder.encode

    def counting(self, batch, lengths):
        seen.append(len(batch))
        return orig(self, batch, lengths)

    monkeypatch.setattr(cavp.CAVPEncoder, "encode", counting)
    assert r.run(["extract"], progress=False) == ["cavp"]
    assert sum(seen) == 3  # one shard of 3 clips
    np.testing.assert_array_equal(store["cavp/emb"][:], ref)
