"""The one generation core (infer/core.py): the generate stage and ``pipe()`` give the same sound for the same clip,
prompt and seed (MFM-Mapper and Diff-Mapper here; V2A-Mapper in tests/test_v2a_stages.py); one seeding rule; one
settings type."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import infer.generate
from e2e_project import E2E
from infer.audioldm2 import clip_seed
from infer.core import Clip, mapper_seed, window_seed
from infer.export import export_run
from infer.params import GenerateParams, GenerationSettings
from infer.pipeline import MFMMapperPipeline, clip_ids
from v2a.runner import Runner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def stage_sound(cfg, monkeypatch) -> dict[str, np.ndarray]:
    """Run the generate stage (forced) and keep each clip's float audio as it went into its wav (the tiny models'
    sound is ~1e-6 loud: 16-bit PCM rounds it to 0)."""
    got, real = {}, infer.generate.write_wav

    def write_wav(path, audio, **kw):
        got[Path(path).stem] = np.array(audio, dtype=np.float32)
        return real(path, audio, **kw)

    monkeypatch.setattr(infer.generate, "write_wav", write_wav)
    assert Runner(cfg).run(["generate"], only=True, force=True, progress=False) == ["generate"]
    monkeypatch.setattr(infer.generate, "write_wav", real)
    return got


def cache_the_computed_features(pipe: MFMMapperPipeline, root: Path, videos: dict[str, str]) -> None:
    """Put into the cache, for ``videos`` ({clip id: path}), the features ``pipe`` computes from the files: the two
    feature paths agree up to float16 rounding and batch-size rounding of the encoders (tests/test_pipeline_e2e.py);
    here the stage and ``pipe()`` get the same input, so that what is compared is everything after it."""
    import zarr

    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r+")
    row = {str(c): i for i, c in enumerate(z["meta/id"][:])}
    for cid, path in videos.items():
        for name, a in pipe.prepare(path).features.items():  # (1, ...): one window
            emb = z[f"{name}/emb"]
            emb[row[cid]] = a[0].astype(emb.dtype)


def same_sound_as_the_stage(cfg, root: Path, specs: dict, folder: Path, monkeypatch) -> None:
    pipe = MFMMapperPipeline.from_pretrained(folder, device="cpu")
    test = {cid: s for cid, s in specs.items() if s.split == "test" and s.has_audio}
    cache_the_computed_features(pipe, root, {cid: s.path for cid, s in test.items()})
    stage = stage_sound(cfg, monkeypatch)
    assert set(test) <= set(stage) and len(test) >= 2
    prompts = pipe.core.uses_text
    for cid, s in test.items():
        out = pipe(s.path, prompt=s.label if prompts else None, seed=0, batch_size=1)  # the stage's batch: 1
        (clip,) = out.clips
        assert clip.id == cid and clip.seed == clip_seed(0, cid)  # the demo videos' stems are their clip ids
        assert np.abs(stage[cid]).max() > 0
        # bit for bit; the stage writes one whole window, pipe() cuts it to the video's length
        assert len(out.audios[0]) <= len(stage[cid])
        np.testing.assert_array_equal(out.audios[0], stage[cid][: len(out.audios[0])])
        rec = json.loads((root / "out" / "generated" / f"{cid}.json").read_text())
        assert rec["seed"] == clip.seed and rec["prompt"] == (s.label if prompts else None)


@pytest.mark.parametrize("family", ["autoregressive", "diffusion"])
def test_the_stage_and_pipe_give_the_same_sound(family, e2e_project, demo_config, tmp_path, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(e2e_project[0], root, symlinks=True)
    sets = [*E2E, "stages.generate.runtime.batch_size=1"]
    if family == "diffusion":
        sets += ["stages.train.params.mapper=diffusion", "stages.train.params.sample_steps=3"]
    cfg = demo_config(root, *sets)
    if family == "diffusion":
        assert Runner(cfg).run(["train"], progress=False) == ["train"]
    folder = export_run(cfg, tmp_path / "folder")
    assert json.loads((folder / "mapper" / "config.json").read_text())["kind"] == family
    same_sound_as_the_stage(cfg, root, e2e_project[1], folder, monkeypatch)


def test_windows_are_seeded_alike_whatever_the_batch(monkeypatch):
    """A clip's window k is generated exactly as a one-window clip seeded window_seed(seed, k), alone or in any
    batch (up to the rounding of batched products); a diffusion mapper's noise is seeded from the window's seed."""
    from e2e_project import tiny_pipeline

    pipe = tiny_pipeline(steps=2)
    rng = np.random.default_rng(0)
    feats = {"cavp": rng.normal(size=(3, 40, 32)).astype(np.float32),
             "timechat": rng.normal(size=(3, 10, 32, 32)).astype(np.float32)}
    settings = dataclasses.replace(pipe.settings, audio_seconds=0.64)
    long = Clip("long", feats, prompt="dog barking", seed=7, starts=[0.0, 0.25, 0.5], window_seconds=0.5,
                samples=16000)
    singles = [Clip(f"w{k}", {n: a[k: k + 1] for n, a in feats.items()}, prompt="dog barking",
                    seed=window_seed(7, k)) for k in range(3)]
    seen = []
    real = pipe.core.sound

    def sound(windows, prompts, seeds, s):
        seen.append(list(seeds))
        return real(windows, prompts, seeds, s)

    monkeypatch.setattr(pipe.core, "sound", sound)
    alone = [pipe.generate([c], settings, batch_size=1)[0] for c in singles]
    batched = pipe.generate([singles[2], *singles[:2]], settings, batch_size=3)
    assert seen[:3] == [[7], [8], [9]] and seen[3] == [9, 7, 8]
    for a, b in zip(alone, [batched[1], batched[2], batched[0]]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(a).max())
    (joined,) = pipe.generate([long], settings, batch_size=2)
    assert seen[4:] == [[7, 8], [9]] and joined.shape == (16000,)
    np.testing.assert_allclose(joined[:4000], alone[0][:4000], rtol=0, atol=1e-4 * np.abs(alone[0]).max())
    assert mapper_seed(7) == clip_seed(7, "mapper") != 7


def test_one_settings_type_with_its_defaults_written_once():
    names = [f.name for f in dataclasses.fields(GenerationSettings)]
    p = GenerateParams()
    assert names == [f.name for f in dataclasses.fields(GenerateParams)][: len(names)]  # the stage's params extend it
    assert p.settings() == GenerationSettings() and GenerationSettings().guidance == 3.5
    p = GenerateParams.from_dict({"steps": 7, "guidance": 2.5, "split": "val", "model": "tiny"})
    assert p.settings() == GenerationSettings(steps=7, guidance=2.5)
    assert p.model_params("audioldm2") == {"model": "tiny", "seed": 0, "gpt_dim": 32, "t5_dim": 16}
    assert p.model_params("audioldm") == {"model": "tiny", "seed": 0, "clap_dim": 16}
    s = GenerationSettings().replace(steps=3, guidance=None)
    assert (s.steps, s.guidance) == (3, 3.5)
    with pytest.raises(ValueError, match="unknown keys"):
        GenerationSettings.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="guidance=-1"):
        GenerationSettings().replace(guidance=-1)


def test_clip_ids_are_file_name_safe_and_unique():
    assert clip_ids([Path("a/x y.mp4"), Path("b/x y.mkv"), Path("c/ü.webm"), Path("d/...mp4")]) == [
        "x_y", "x_y_1", "ü", "clip"]
