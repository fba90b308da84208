"""The clip grid (frozen/grid.py): counts derived from fps and seconds, rules checked when the configuration loads
(one line per problem, before any stage runs), and a grid other than the paper's through every stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from frozen.grid import ClipGrid, grid_of
from lab.cli import app
from v2a.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent
DEMO = ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml")]


def test_the_papers_grid():
    g = ClipGrid()
    assert (g.n_frames, g.n_samples, g.frame_shape) == (40, 160_000, (40, 224, 224, 3))
    assert g.frame_times()[:3] == [0.0, 0.25, 0.5] and g.frame_times()[-1] == 9.75
    # TimeChat writes str(round(i / fps, 1)): half-way cases go to the even digit of the float
    assert g.timestamps()[:8] == [0.0, 0.2, 0.5, 0.8, 1.0, 1.2, 1.5, 1.8] and g.timestamps()[-1] == 9.8
    assert g.windows(4, 4) == [(4 * k, 4 * k + 4) for k in range(10)]
    assert g.windows(32, 32) == [(0, 32), (32, 40)]  # the short last window is kept
    assert [g.n_windows(w, s) for w, s in ((4, 4), (8, 4), (5, 3), (40, 40), (1, 1))] == [10, 10, 14, 1, 40]
    assert g.problems() == []
    assert grid_of({"fps": 4, "seconds": 10.0, "size": 224, "sample_rate": 16000, "codec": "jpeg"}) == g


def test_other_grids_and_their_rules():
    g = ClipGrid(fps=8, seconds=10.0)
    assert (g.n_frames, g.n_windows(4, 4), g.timestamps()[1], g.n_samples) == (80, 20, 0.1, 160_000)
    assert ClipGrid(fps=3, seconds=10.0).problems() == [] and ClipGrid(fps=3, seconds=10.0).n_frames == 30
    assert ClipGrid(fps=4, seconds=10.1).problems() == [
        "stages.frames.params.seconds: 10.1 s at 4 fps is 40.4 frames; a clip must hold a whole number of frames "
        "(e.g. seconds 10.25)"]
    assert ClipGrid(sample_rate=22_050).problems() == [
        "stages.frames.params.sample_rate: 22050 Hz; AudioLDM-2's audio (the AudioMAE targets, the generated sound, "
        "CLAP's input) is 16000 Hz, so the cache must be too"]
    assert ClipGrid(fps=10).reader_problems("timechat", size=224, max_frames=96, why="its positions") == [
        "stages.frames.params.fps: 10 fps x 10 s = 100 frames, but the timechat stage places at most 96 (its "
        "positions); lower fps or seconds"]
    with pytest.raises(ValueError, match="window"):
        ClipGrid().windows(0, 4)


def _load(demo_config, tmp_path, *sets):
    return demo_config(tmp_path, *sets)


def _problems(demo_config, tmp_path, *sets) -> list[str]:
    with pytest.raises(ConfigError) as e:
        demo_config(tmp_path, *sets)
    return e.value.problems


def test_settings_that_cannot_work_are_refused_at_load(demo_config, tmp_path):
    fps8 = "stages.frames.params.fps=8"
    assert _problems(demo_config, tmp_path, fps8) == [
        "stages.train.params.cavp_steps: 40, but the frames' clip grid gives 80 frames a clip "
        "(stages.frames.params: 8 fps x 10 s); set cavp_steps: 80"]
    assert _problems(demo_config, tmp_path, "stages.frames.params.fps=10", "stages.train.params.cavp_steps=100") == [
        "stages.frames.params.fps: 10 fps x 10 s = 100 frames, but the timechat stage places at most 96 (rows of "
        "video_frame_position_embedding); lower fps or seconds"]
    seconds = _problems(demo_config, tmp_path, "stages.frames.params.seconds=8.0", "stages.train.params.cavp_steps=32")
    assert seconds == ["stages.frames.params.seconds: 8 s (128000 samples at 16000 Hz), but the audiomae stage's "
                       "targets are AudioLDM-2's 160000 samples (10 s at 16 kHz); set seconds: 10"]
    assert _problems(demo_config, tmp_path, "stages.frames.params.seconds=10.1")[0].startswith(
        "stages.frames.params.seconds: 10.1 s at 4 fps is 40.4 frames")
    assert _problems(demo_config, tmp_path, "stages.frames.params.size=256") == [
        "stages.frames.params.size: 256 px, but the cavp stage reads 224 x 224 frames; set size: 224",
        "stages.frames.params.size: 256 px, but the timechat stage reads 224 x 224 frames; set size: 224"]
    assert _problems(demo_config, tmp_path, "stages.timechat.params.fps=4") == [
        "stages.timechat.params.fps: got 4; the frame rate is set once, in stages.frames.params.fps (TimeChat's "
        "timestamps and windows follow the frames' clip grid); remove this key"]


def test_settings_that_agree_load(demo_config, tmp_path):
    cfg = _load(demo_config, tmp_path, "stages.frames.params.fps=8", "stages.train.params.cavp_steps=80")
    assert grid_of(cfg.stage("frames").params).n_frames == 80 and "fps" not in cfg.stage("timechat").params
    cfg = _load(demo_config, tmp_path, "stages.frames.params.fps=5", "stages.train.params.cavp_steps=50")
    assert grid_of(cfg.stage("frames").params).n_windows(4, 4) == 13
    assert grid_of(_load(demo_config, tmp_path).stage("frames").params) == ClipGrid()


def test_cli_refuses_in_one_line_before_any_stage(tmp_path):
    res = CliRunner().invoke(app, [*DEMO, "--set", f"paths.cache={tmp_path / 'cache'}",
                                   "--set", "stages.frames.params.fps=8", "run", "extract"])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == ["error: stages.train.params.cavp_steps: 40, but the frames' clip grid gives 80 "
                                       "frames a clip (stages.frames.params: 8 fps x 10 s); set cavp_steps: 80"]
    assert "Traceback" not in res.output and not (tmp_path / "cache").exists()  # nothing ran


def test_an_eight_fps_grid_through_every_stage(tmp_path, demo_config):
    """fps 8 (80 frames a clip) on the tiny models: frames -> cavp, timechat, audiomae -> train -> generate, then
    `v2a generate` on a longer video (its windows encoded by the pipeline's own encoders on the same grid)."""
    import zarr

    from infer.videos import generate_videos
    from pipeline.demo_data import make_demo_clips
    from v2a.runner import Runner

    specs = make_demo_clips(tmp_path / "videos", n=4, seed=5)
    sets = ("stages.frames.params.fps=8", "stages.train.params.cavp_steps=80", "stages.frames.params.shard_size=2",
            "stages.train.params.epochs=2", "stages.train.params.global_batch=2", "stages.generate.params.steps=2")
    cfg = demo_config(tmp_path, *sets)
    assert Runner(cfg).run(["generate"], progress=False) == ["frames", "cavp", "timechat", "audiomae", "train",
                                                              "generate"]
    root = zarr.open_group(str(tmp_path / "cache" / "features.zarr"), mode="r")
    n = len(specs)
    assert root["cavp/emb"].shape == (n, 80, 32) and root["timechat/emb"].shape == (n, 20, 32, 32)
    assert root["cavp"].attrs["fps"] == 8 and root["timechat"].attrs["config"]["fps"] == 8
    durations = {s.id: s.duration for s in specs}
    ids = [str(i) for i in root["meta/id"][:]]
    want = [min(80, int(np.ceil(durations[i] * 8 - 1e-9))) for i in ids]  # frames shown before the clip ends
    assert [int(k) for k in root["meta/n_frames"][:]] == want
    wavs = list((tmp_path / "out" / "generated").glob("*.wav"))
    assert wavs
    long = next(s for s in specs if s.duration == 14.0)
    copy = tmp_path / "in" / Path(long.path).name
    copy.parent.mkdir()
    shutil.copy(long.path, copy)
    done = generate_videos(cfg, [copy], tmp_path / "gen", duration=12.0, steps=2, progress=False)
    assert [d["features"] for d in done] == ["computed"] and done[0]["windows"] == 2
