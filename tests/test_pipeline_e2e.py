"""Every stage with the tiny models on synthetic clips: train, generate (stage and `v2a generate`), evaluate."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from e2e_project import E2E
from infer.generate import mapper_checkpoint
from infer.media_out import video_span
from infer.videos import generate_videos
from v2a.runner import Runner


@pytest.fixture(scope="module")
def project(e2e_project):
    return e2e_project


def video_packets(path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def test_generate_stage_outputs(project):
    root, specs = project
    out = root / "out" / "generated"
    test_ids = sorted(i for i, s in specs.items() if s.split == "test")
    assert test_ids and sorted(p.stem for p in out.glob("*.wav")) == test_ids
    for cid in test_ids:
        rec = json.loads((out / f"{cid}.json").read_text())
        info = sf.info(str(out / rec["wav"]))
        assert info.samplerate == 16000 and info.frames == int(10.24 * 16000)
        src = specs[cid].path
        assert rec["video"].endswith(Path(src).suffix)
        assert video_packets(out / rec["video"]) == video_packets(src)  # video stream copied, bit-exact
        with av.open(str(out / rec["video"])) as c:
            assert len(c.streams.audio) == 1
            dur = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
        assert abs(dur - min(specs[cid].duration, 10.24)) < 0.1  # trimmed to the video, or all 10.24 s
        assert (out / rec["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "index.csv").read_text().count("\n") == len(test_ids) + 1


def test_generate_is_deterministic_and_resumes(project, tmp_path, demo_config):
    root = tmp_path / "p"
    shutil.copytree(project[0], root)
    out = root / "out" / "generated"
    wavs = sorted(out.glob("*.wav"))
    before = {p.name: p.read_bytes() for p in wavs}
    (out / f"{wavs[0].stem}.json").unlink()  # as if killed before this clip was finished
    mtime = wavs[1].stat().st_mtime_ns
    r = Runner(demo_config(root, *E2E))
    assert r.run(["generate"], force=True, only=True, progress=False) == ["generate"]
    assert {p.name: p.read_bytes() for p in out.glob("*.wav")} == before
    assert wavs[1].stat().st_mtime_ns != mtime  # forced: regenerated, same bytes
    (out / f"{wavs[0].stem}.json").unlink()
    (out / "_stage.json").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in wavs}
    assert r.run(["generate"], progress=False) == ["generate"]
    # the unfinished clip's whole batch (runtime.batch_size 4, row order) is generated again, as the same batch:
    # the same bytes; the clips of the other batches are kept as they were
    assert {p.name: p.read_bytes() for p in out.glob("*.wav")} == before
    redone = [p.name for p in wavs if p.stat().st_mtime_ns != mtimes[p.name]]
    assert wavs[0].name in redone and len(redone) <= 4


def test_v2a_generate_on_files_and_bad_input(project, tmp_path, demo_config):
    root, specs = project
    cid = sorted(i for i, s in specs.items() if s.split == "test")[0]
    elsewhere = tmp_path / "in"
    elsewhere.mkdir()
    shutil.copy(specs[cid].path, elsewhere / Path(specs[cid].path).name)  # not in the cache: computed here
    (elsewhere / "broken.mp4").write_bytes(b"\x00" * 100)
    done = generate_videos(demo_config(root, *E2E), [elsewhere, Path(specs[cid].path)], tmp_path / "out", prompt="red beep",
                           progress=False)
    assert [d["features"] for d in done] == ["computed", "cache"]
    assert [d["id"] for d in done] == [cid, f"{cid}_1"]
    start, end = video_span(specs[cid].path)
    for d in done:  # one window, at most the video's length
        assert sf.info(str(tmp_path / "out" / d["wav"])).frames == int(round(min(10.24, end - start) * 16000))
        assert d["prompt"] == "red beep"
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "rejects.csv").read_text())))
    assert rows[0] == ["source", "reason", "detail"] and rows[1][:2] == [str(elsewhere / "broken.mp4"), "not_a_video"]


def test_features_computed_for_a_video_match_the_cache(project, demo_config):
    import zarr

    from infer.export import pipeline_from_run
    from infer.pipeline import as_stored
    from pipeline.media import decode_clip

    root, specs = project
    pipe = pipeline_from_run(demo_config(root, *E2E))
    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r")
    row = 1
    d = decode_clip(specs[str(z["meta/id"][row])].path)
    feats = pipe.encode_frames(as_stored(d.frames, d.n_frames, pipe.frames), d.n_frames)
    for name in ("cavp", "timechat"):
        cached = z[f"{name}/emb"][row].astype(np.float32)
        # same frames, same code: equal up to float16 storage and batch-size rounding
        err = np.abs(feats[name] - cached)
        assert err.max() < 1e-2 and (err < 1e-3).mean() > 0.99


def test_mismatched_or_missing_mapper_is_a_clear_error(project, tmp_path, demo_config):
    root, _ = project
    with pytest.raises(RuntimeError, match="run `make train`"):
        mapper_checkpoint(tmp_path / "nothing", "best")
    from infer.generate import GenerateParams, Generator

    gen = Generator(GenerateParams.from_dict(demo_config(root, *E2E).stage("generate").params),
                    mapper_checkpoint(root / "runs" / "mapper", "best"))
    with pytest.raises(RuntimeError, match="do not match the mapper"):
        gen.check_features({"cavp": (40, 16), "timechat": (10, 32, 32)}, "clip.mp4")


def test_changed_encoder_makes_train_and_generate_stale(project, demo_config):
    root, _ = project
    r = Runner(demo_config(root, *E2E, "stages.cavp.params.seed=1"))
    assert r.status("cavp") == (False, ["params changed", "checkpoint changed"])  # tiny weights = seed
    assert r.status("train") == (False, ["input cavp changed"])
    assert r.status("generate") == (False, ["input train changed"])
    assert r.status("audiomae")[0] and r.status("timechat")[0]
    with pytest.raises(RuntimeError, match="needs cavp, which is stale"):
        r.run(["train"], only=True)
    with pytest.raises(RuntimeError, match=r"mapper in .* is not up to date .*input cavp changed.*--mapper"):
        generate_videos(r.cfg, [Path(next(iter(project[1].values())).path)], root / "unused", progress=False)


def test_evaluate_report(project):
    root, specs = project
    ev = root / "out" / "evaluation"
    m = json.loads((ev / "metrics.json").read_text())
    assert m["complete"] is True and m["counts"]["clips"] == sum(s.split == "test" for s in specs.values())
    for key in ("fd_passt", "fd_panns", "fd_vgg", "kl_panns", "kl_passt"):
        assert m["metrics"][key]["status"] == "ok" and np.isfinite(m["metrics"][key]["value"])
    n_test = m["counts"]["clips"]
    ib, ds = m["metrics"]["ib_score"], m["metrics"]["desync"]
    assert ib["status"] == "ok" and -100 <= ib["value"] <= 100 and ib["n_clips"] + ib.get("n_failed", 0) == n_test
    assert ds["status"] == "ok" and 0 <= ds["value"] <= 2.0 and ds["n_clips"] + ds.get("n_failed", 0) == n_test
    table = (ev / "table.md").read_text()
    assert "111.74" in table and "quoted from the paper" in table
    html = (ev / "gallery" / "index.html").read_text()
    assert all(cid in html for cid, s in specs.items() if s.split == "test")


def test_whole_video_in_overlapping_windows(project, tmp_path, demo_config):
    root, specs = project
    long = next(s for s in specs.values() if s.duration == 14.0)
    done = generate_videos(demo_config(root, *E2E), [Path(long.path)], tmp_path / "out", whole=True, progress=False)
    (rec,) = done
    assert rec["windows"] == 2 and rec["features"] == "computed"
    n = sf.info(str(tmp_path / "out" / rec["wav"])).frames
    assert n == int(round((rec["mux"]["video_duration"]) * 16000))  # the wav is as long as the video
    assert abs(n / 16000 - 14.0) < 0.05
    with av.open(str(tmp_path / "out" / rec["video"])) as c:
        muxed = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(muxed - n / 16000) < 0.05  # and so is the muxed soundtrack
