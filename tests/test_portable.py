"""The trained mapper as a portable pipeline: export, save/load round trips, hub layout and upload, the call
(batches, duration, whole videos), the CLI from a fresh folder without the cache, encoder mismatches."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from e2e_project import E2E, REPO
from infer import hub
from infer.audioldm2 import clip_seed
from infer.export import export_run
from infer.core import Clip
from infer.media_out import video_span
from infer.params import GenerationSettings
from infer.pipeline import MFMMapperPipeline
from infer.windows import crossfade_join
from lab.cli import app


@pytest.fixture(scope="module")
def exported(e2e_project, tmp_path_factory, demo_config):
    root, specs = e2e_project
    folder = export_run(demo_config(root, *E2E), tmp_path_factory.mktemp("export") / "mfm-tiny")
    return root, specs, folder


@pytest.fixture(scope="module")
def pipe(exported):
    return MFMMapperPipeline.from_pretrained(exported[2], device="cpu")


def close(a, b) -> None:
    """Equal up to float rounding of batched matrix products (the tiny models' sound is ~1e-6 loud)."""
    assert a.shape == b.shape and np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()))


def _videos(specs, n=2):
    return [Path(s.path) for s in sorted(specs.values(), key=lambda s: s.id) if s.has_audio][:n]


def _long(specs):
    return Path(next(s for s in specs.values() if s.duration == 14.0).path)


@pytest.fixture(scope="module")
def whole_result(pipe, exported):
    return pipe(_long(exported[1]), steps=2, whole=True)


def test_export_writes_the_hub_folder(exported):
    root, _, folder = exported
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted([*hub.FILES.values(), hub.INDEX])
    best = root / "runs" / "mapper" / "best"
    manifest = json.loads((best / "manifest.json").read_text())
    want = load_file(str(best / manifest["files"]["weights"]))
    got = load_file(str(folder / hub.FILES["mapper_weights"]))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    enc = json.loads((folder / "encoders.json").read_text())
    assert sorted(enc["encoders"]) == ["cavp", "timechat"] and enc["encoders"]["cavp"]["params"]["model"] == "tiny"
    assert enc["frames"]["fps"] == 4 and "audiomae" in enc["target"]
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["audioldm2"] == {"model": "tiny", "seed": 0, "gpt_dim": 32, "t5_dim": 16}
    assert gen["settings"] == {**dataclasses.asdict(GenerationSettings()), "steps": 4,  # the run's generate params
                               "label_model": "tiny"}
    tr = json.loads((folder / "training.json").read_text())
    assert tr["epochs"] == 3 and tr["best"]["epoch"] == manifest["epoch"]
    assert tr["best"]["val_loss"] == manifest["history"][-1]["val_loss"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mfm-mapper")
    assert f"| validation MSE (teacher forced) | {tr['best']['tf_mse']:.5g} |" in card
    assert "| epochs | 3 of 3" in card and "4 train" in card
    assert tr["metrics"]["fd_passt"]["status"] == "ok"  # evaluated: the metrics are in the card
    assert f"| fd_passt | {tr['metrics']['fd_passt']['value']:.5g} |" in card


def _same_folders(a: Path, b: Path) -> None:
    for rel in hub.FILES.values():
        if rel.endswith(".safetensors"):
            x, y = load_file(str(a / rel)), load_file(str(b / rel))
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        else:
            assert (a / rel).read_text() == (b / rel).read_text(), rel


def test_save_load_round_trip(pipe, exported, tmp_path):
    folder = exported[2]
    again = pipe.save_pretrained(tmp_path / "copy")
    _same_folders(folder, again)
    other = MFMMapperPipeline.from_pretrained(again)
    feats = [{"cavp": np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32),
              "timechat": np.random.default_rng(1).normal(size=(10, 32, 32)).astype(np.float32)}]
    assert torch.equal(pipe.tokens(feats), other.tokens(feats))
    assert other.settings == pipe.settings and other.encoders_record == pipe.encoders_record


def test_a_format_1_folder_still_loads(pipe, exported, tmp_path):
    """Folders written before V2A-Mapper exports: format 1, the settings under "defaults" (no scheduler)."""
    old = tmp_path / "old"
    shutil.copytree(exported[2], old)
    gen = json.loads((old / hub.FILES["generation"]).read_text())
    defaults = {k: v for k, v in gen.pop("settings").items() if k != "scheduler"}
    (old / hub.FILES["generation"]).write_text(json.dumps({**gen, "defaults": defaults}))
    index = json.loads((old / hub.INDEX).read_text())
    (old / hub.INDEX).write_text(json.dumps({**index, "format": 1}))
    loaded = MFMMapperPipeline.from_pretrained(old)
    assert loaded.settings == pipe.settings and loaded.model_params == pipe.model_params
    (old / hub.INDEX).write_text(json.dumps({**index, "format": hub.FORMAT + 1}))
    with pytest.raises(ValueError, match=f"up to format {hub.FORMAT}"):
        MFMMapperPipeline.from_pretrained(old)


def test_loads_a_hub_repo_from_the_local_hub_cache(exported, tmp_path, monkeypatch):
    """The hub path: a repo id resolved by huggingface_hub.snapshot_download from its cache layout, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--mfm-tiny"
    shutil.copytree(exported[2], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    p = MFMMapperPipeline.from_pretrained("someone/mfm-tiny", cache_dir=tmp_path / "hub")
    _same_folders(exported[2], p.save_pretrained(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="could not be fetched from the hub"):
        MFMMapperPipeline.from_pretrained("someone/missing", cache_dir=tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match="neither a pipeline folder nor a hub repo id"):
        MFMMapperPipeline.from_pretrained(str(tmp_path / "no" / "such"))


def test_push_to_hub_uploads_the_saved_folder(pipe, exported, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        shutil.copytree(folder_path, tmp_path / "uploaded")  # what the hub would receive
        calls.append(("upload_folder", repo_id, kw))
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert pipe.push_to_hub("me/mfm-tiny", private=True) == "commit-info"
    assert [c[:2] for c in calls] == [("create_repo", "me/mfm-tiny"), ("upload_folder", "me/mfm-tiny")]
    assert calls[0][2]["exist_ok"] and calls[0][2]["private"] and calls[1][2]["repo_type"] == "model"
    _same_folders(exported[2], tmp_path / "uploaded")


def test_call_batches_durations_and_writes_videos(pipe, exported, tmp_path):
    v1, v2 = _videos(exported[1])
    out = pipe([v1, v2], prompt=["red beep", None], steps=2, seed=5, duration=3.0, output_dir=tmp_path)
    assert out.sample_rate == 16000 and [a.shape for a in out.audios] == [(48000,), (48000,)]
    single = pipe(v2, prompt=None, steps=2, seed=5, duration=3.0)
    close(single.audios[0], out.audios[1])  # a video's sound does not depend on the batch
    assert not np.array_equal(out.audios[0], out.audios[1])
    for v, path in zip((v1, v2), out.videos):
        assert path == tmp_path / f"{v.stem}{v.suffix}"
        with av.open(str(path)) as c:
            assert len(c.streams.audio) == 1 and len(c.streams.video) == 1
    default = pipe(v1, prompt="red beep", steps=2, seed=5)
    start, end = video_span(v1)
    # one window: AudioLDM-2's 10.24 s, cut to the video's length when the video is shorter
    assert default.audios[0].shape == (int(round(min(10.24, end - start) * 16000)),)
    close(default.audios[0][:48000], out.audios[0])  # duration crops the same sound


def test_call_arguments_are_checked(pipe, exported, tmp_path):
    from pipeline.media import MediaError

    v1, v2 = _videos(exported[1])
    with pytest.raises(FileNotFoundError, match="nope.mp4 does not exist"):
        pipe([v1, tmp_path / "nope.mp4"])
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(MediaError, match="not_a_video"):
        pipe(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="not both"):
        pipe(v1, duration=12.0, whole=True)
    with pytest.raises(ValueError, match="prompt has 3 values for 2 videos"):
        pipe([v1, v2], prompt=["a", "b", "c"])
    with pytest.raises(ValueError, match="duration=-1"):
        pipe(v1, duration=-1)
    with pytest.raises(ValueError, match="seed has 1 values for 2 videos"):
        pipe([v1, v2], seed=[1])


def test_whole_video_windows_are_crossfaded(pipe, exported, whole_result):
    long = _long(exported[1])
    (audio,), (clip,) = whole_result.audios, whole_result.clips
    start, end = video_span(long)
    assert clip.starts == [0.0, 4.0] and audio.shape == (int(round((end - start) * 16000)),)
    # each window generated alone, joined independently: the call's audio is their equal-power crossfade
    seed = clip_seed(0, long.stem)
    assert clip.seed == seed
    two = dataclasses.replace(pipe.settings, steps=2)
    parts = [pipe.generate([Clip("w", {n: a[k: k + 1] for n, a in clip.features.items()}, prompt=clip.prompt,
                                 seed=seed + k)], two)[0] for k in range(2)]
    close(audio, crossfade_join(parts, [0, 64000], 160000, len(audio)))
    close(audio[:64000], parts[0][:64000])  # before the overlap: window 0 alone
    close(audio[160000:], parts[1][96000: 96000 + len(audio) - 160000])  # after it: window 1 alone
    assert not np.allclose(parts[0][64000:160000], parts[1][:96000], rtol=0, atol=1e-3 * np.abs(audio).max())


def test_cli_generates_from_the_exported_folder_alone(exported, whole_result, tmp_path, monkeypatch, demo_config):
    """Export, delete the training cache and runs, generate from a fresh folder (no stages.yaml there)."""
    root, specs, folder = exported
    project = tmp_path / "project"
    shutil.copytree(root, project)
    local = export_run(demo_config(project, *E2E), tmp_path / "exported")
    shutil.rmtree(project / "cache")
    shutil.rmtree(project / "runs")
    work = tmp_path / "fresh"
    work.mkdir()
    monkeypatch.chdir(work)
    import infer.generate

    written, real_write_wav = {}, infer.generate.write_wav

    def write_wav(path, audio, **kw):  # keep the float audio: the tiny models' sound rounds to 0 in 16-bit PCM
        written[Path(path).name] = audio
        return real_write_wav(path, audio, **kw)

    monkeypatch.setattr(infer.generate, "write_wav", write_wav)
    long = _long(specs)
    res = CliRunner().invoke(app, ["--no-progress", "generate", "--mapper", str(local), str(long), "--whole",
                                   "--steps", "2", "-o", "out"])
    assert res.exit_code == 0, res.output
    rec = json.loads((work / "out" / f"{long.stem}.json").read_text())
    wav, sr = sf.read(str(work / "out" / rec["wav"]), dtype="float32")
    assert sr == 16000 and len(wav) == int(round(rec["mux"]["video_duration"] * 16000))
    close(written[rec["wav"]], whole_result.audios[0])  # the same sound as the Python call
    with av.open(str(work / "out" / rec["video"])) as c:
        muxed = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(muxed - len(wav) / 16000) < 0.05
    assert not (work / "cache").exists() and not (work / "runs").exists()


def test_configured_encoders_that_differ_stop_with_one_line(exported, tmp_path, monkeypatch):
    root, specs, folder = exported
    monkeypatch.chdir(tmp_path)
    args = ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml"),
            "--set", "stages.cavp.params.seed=1", "--set", "stages.timechat.params.window=8",
            "generate", "--mapper", str(folder), str(_videos(specs, 1)[0]), "-o", "out"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if "ERROR" in ln]
    assert len(lines) == 1 and "cavp.seed 0 -> 1" in lines[0] and "timechat.window 4 -> 8" in lines[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_encoder_differences_compare_what_the_encoders_compute(tmp_path):
    ckpt = tmp_path / "cavp_epoch66.ckpt"
    ckpt.write_bytes(b"0" * 10)
    trained = {"frames": {"fps": 4, "seconds": 10.0, "size": 224, "sample_rate": 16000, "codec": "h264", "crf": 14},
               "encoders": {"cavp": hub.encoder_record(
                   {"model": "full", "checkpoint": "SimianLuo/Diff-Foley", "half": True,
                    "filename": "diff_foley_ckpt/cavp_epoch66.ckpt", "dtype": "float16"}, ["checkpoint"])}}
    same = {**trained, "encoders": {"cavp": hub.encoder_record(
        {"model": "full", "checkpoint": str(ckpt), "half": False, "dtype": "float16"}, ["checkpoint"])}}
    assert hub.encoder_differences(trained, same) == []  # the hub file, copied locally, on CPU
    other = {"frames": {**trained["frames"], "fps": 8}, "encoders": {"cavp": hub.encoder_record(
        {"model": "full", "checkpoint": str(tmp_path / "other.ckpt"), "dtype": "float32"}, ["checkpoint"])}}
    assert hub.encoder_differences(trained, other) == [
        "frames.fps 4 -> 8", "cavp.dtype 'float16' -> 'float32'", "cavp.checkpoint 'cavp_epoch66.ckpt' -> 'other.ckpt'"]
    assert hub.encoder_differences(trained, {"frames": trained["frames"], "encoders": {}}) == ["cavp not configured"]


def test_frame_differences_follow_the_codec():
    """The stored form decides what the encoders saw: the codec, and only the settings of the codec in use."""
    base = {"fps": 4, "seconds": 10.0, "size": 224, "sample_rate": 16000}
    jpeg = {**base, "codec": "jpeg", "quality": 95, "crf": 14, "preset": "medium"}
    old_h264 = {**base, "codec": "h264", "crf": 14}  # a record from before the preset option (x264's medium)
    diff = lambda a, b: hub.encoder_differences({"frames": a, "encoders": {}}, {"frames": b, "encoders": {}})  # noqa: E731
    assert diff(jpeg, {**jpeg, "crf": 20, "preset": "veryfast"}) == []  # H.264 settings do not touch a JPEG store
    assert diff(jpeg, {**jpeg, "quality": 90}) == ["frames.quality 95 -> 90"]
    assert diff(old_h264, {**old_h264, "preset": "medium", "quality": 50}) == []
    assert diff(old_h264, {**old_h264, "preset": "veryfast"}) == ["frames.preset 'medium' -> 'veryfast'"]
    assert diff(old_h264, jpeg) == ["frames.codec 'h264' -> 'jpeg'", "frames.quality None -> 95"]
