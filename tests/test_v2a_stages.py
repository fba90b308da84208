"""The clip and clap stages and the V2A-Mapper run on synthetic clips with the tiny models (configs/v2a-mapper.yaml
before configs/demo.yaml): cache layout, values, rerunning one encoder, then train and generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from frozen import clap, clip
from pipeline.demo_data import make_demo_clips
from pipeline.framestore import iter_shard
from v2a.config import load_config
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent


def config(root: Path, *extra: str):
    sets = [f"paths.videos={root / 'videos'}", f"paths.labels={root / 'videos' / 'labels.csv'}",
            f"paths.cache={root / 'cache'}", f"paths.runs={root / 'runs'}", f"paths.outputs={root / 'out'}",
            "stages.frames.params.shard_size=3", "stages.train.params.epochs=2", "stages.train.params.global_batch=2",
            "stages.generate.params.steps=2", "stages.generate.params.audio_seconds=2.56",
            "stages.train.params.sample_steps=4", *extra]
    files = [REPO / "stages.yaml", REPO / "configs" / "v2a-mapper.yaml", REPO / "configs" / "demo.yaml"]
    return load_config(files, sets)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2a")
    specs = make_demo_clips(root / "videos", n=7, seed=11)
    assert Runner(config(root)).run(["extract"], progress=False) == ["frames", "clip", "clap"]
    return root, specs


def test_cache_layout_and_values(extracted):
    root, specs = extracted
    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r")
    n = len(specs)
    for name, shape in (("clip", (40, 16)), ("clap", (1, 16))):
        g = z[name]
        assert g["emb"].shape == (n, *shape) and g["emb"].dtype == np.float16 and g["emb"].chunks == (3, *shape)
        a = dict(g.attrs)
        assert a["encoder"] == name and a["complete"] is True and a["checkpoint"] == {"tiny_seed": 0}
    usable = z["meta/has_audio"][:] & ~z["meta/audio_silent"][:]
    assert not usable.all() and (z["clap/valid"][:] == usable).all()
    clips = list(iter_shard(root / "cache" / "frames", 1))
    idx = [c.index for c in clips]
    want = clip.build({"model": "tiny", "seed": 0}).encode(torch.from_numpy(np.stack([c.frames for c in clips])),
                                                         torch.tensor([c.meta["n_frames"] for c in clips])).numpy()
    np.testing.assert_allclose(z["clip/emb"][idx[0]: idx[-1] + 1].astype(np.float32), want, atol=2e-3)
    ok = [c for c in clips if c.meta["has_audio"] and not c.meta["audio_silent"]]
    want = clap.build({"model": "tiny", "seed": 0}).encode(torch.from_numpy(np.stack([c.audio for c in ok])),
                                                         torch.tensor([c.meta["audio_len"] for c in ok])).numpy()
    got = np.stack([z["clap/emb"][c.index] for c in ok]).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_rerunning_clip_leaves_the_rest_untouched_then_train_and_generate(extracted, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(extracted[0], root, symlinks=True)
    store = root / "cache" / "features.zarr"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "clip" not in p.parts}
    r = Runner(config(root, "stages.clip.params.normalize=false"))
    assert r.status("clip") == (False, ["params changed"]) and r.status("clap")[0]
    assert r.run(["extract"], progress=False) == ["clip"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # clap, meta and frames untouched
    assert r.run(["generate"], progress=False) == ["train", "generate"]
    out = root / "out" / "generated"
    wavs = sorted(out.glob("*.wav"))
    assert wavs and all(json.loads((out / f"{w.stem}.json").read_text())["seconds"] == 2.56 for w in wavs)
    manifest = json.loads((root / "runs" / "mapper" / "last" / "manifest.json").read_text())
    assert manifest["mapper"]["kind"] == "v2a_diffusion" and manifest["config"]["mapper"] == "v2a_diffusion"


def test_a_v2a_mapper_run_exports_and_generates_like_the_stage(extracted, tmp_path, monkeypatch):
    """`v2a export` of a V2A-Mapper run: the folder records CLIP and AudioLDM, loads back (save/load round trip)
    and gives the stage's sound for the same clip and seed (infer/core.py; tests/test_infer_core.py)."""
    from test_infer_core import same_sound_as_the_stage

    from infer import hub
    from infer.export import export_run
    from infer.pipeline import MFMMapperPipeline

    root = tmp_path / "p"
    shutil.copytree(extracted[0], root, symlinks=True)
    cfg = config(root, "stages.generate.runtime.batch_size=1")
    assert Runner(cfg).run(["train"], progress=False) == ["train"]
    folder = export_run(cfg, tmp_path / "v2a-folder")
    enc = json.loads((folder / hub.FILES["encoders"]).read_text())
    assert list(enc["encoders"]) == ["clip"] and list(enc["target"]) == ["clap"]
    gen = json.loads((folder / hub.FILES["generation"]).read_text())
    assert gen["audioldm"] == {"model": "tiny", "seed": 0, "clap_dim": 16} and "audioldm2" not in gen
    assert gen["settings"]["steps"] == 2 and gen["settings"]["audio_seconds"] == 2.56
    assert "# V2A-Mapper pipeline" in (folder / hub.FILES["card"]).read_text()
    pipe = MFMMapperPipeline.from_pretrained(folder, device="cpu")
    assert pipe.generator == "audioldm" and pipe.encoder_names == ["clip"]
    again = pipe.save_pretrained(tmp_path / "again")
    for rel in hub.FILES.values():
        if not rel.endswith(".safetensors"):
            assert (again / rel).read_text() == (folder / rel).read_text(), rel
    same_sound_as_the_stage(cfg, root, {s.id: s for s in extracted[1]}, folder, monkeypatch)
