"""``v2a generate`` on files and folders as a batch job (infer/videos.py): the output folder's lock (two
processes), every input probed before a model loads, complete clips skipped (a killed run resumes), ``--overwrite``,
``rejects.csv`` replaced by each run, the summary line, a run whose every input is rejected fails, auto labels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from e2e_project import E2E, REPO
from infer.export import export_run
from infer.media_out import video_span
from infer.pipeline import MFMMapperPipeline
from infer.videos import LOCK, REJECTS, run_videos
from lab.cli import app
from pipeline.demo_data import ClipSpec, write_clip

CONFIG = ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml")]


@pytest.fixture(scope="module")
def exported(e2e_project, tmp_path_factory, demo_config):
    root, specs = e2e_project
    return root, specs, export_run(demo_config(root, *E2E), tmp_path_factory.mktemp("export") / "mfm-tiny")


def _inputs(folder: Path, specs, n: int, bad: bool = True) -> list[Path]:
    """``n`` demo videos copied into ``folder``, plus (``bad``) a file that is not a video and an 8 x 8 video."""
    folder.mkdir(parents=True, exist_ok=True)
    videos = [Path(s.path) for s in sorted(specs.values(), key=lambda s: s.id) if s.has_audio][:n]
    for v in videos:
        shutil.copy2(v, folder / v.name)
    if bad:
        (folder / "broken.mp4").write_bytes(b"\x00" * 100)
        write_clip(ClipSpec("tiny", 0, "red beep", "test", str(folder / "tiny.mp4"), 0.5, width=8, height=8,
                            has_audio=False))
    return [folder / v.name for v in videos]


def _no_models(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(MFMMapperPipeline, "from_pretrained", boom)


def test_a_folder_is_a_resumable_batch_job(exported, tmp_path, demo_config, monkeypatch):
    root, specs, folder = exported
    cfg = demo_config(root, *E2E)
    videos = _inputs(tmp_path / "in", specs, 3)
    out = tmp_path / "out"
    go = dict(mapper=str(folder), configured=False, steps=2, progress=False)

    first = run_videos(cfg, [tmp_path / "in"], out, **go)
    assert sorted(r["id"] for r in first.written) == sorted(v.stem for v in videos) and not first.skipped
    reasons = {Path(s).name: (r, d) for s, r, d in first.rejects}
    assert reasons["broken.mp4"][0] == "not_a_video"
    assert reasons["tiny.mp4"] == ("absurd_dimensions", "8x8; allowed sides 16..8192, at most 40000000 pixels")
    assert (out / REJECTS).read_text().splitlines()[0] == "source,reason,detail"
    for rec, v in zip(sorted(first.written, key=lambda r: r["id"]), sorted(videos)):
        saved = json.loads((out / f"{v.stem}.json").read_text())
        assert saved == json.loads(json.dumps(rec, default=str))
        assert rec["prompt_from"] == "auto" and len(rec["labels"]) == 3 and rec["prompt"] == rec["labels"][0]["label"]
        start, end = video_span(v)
        assert sf.info(str(out / rec["wav"])).frames == int(round(min(10.24, end - start) * 16000))
    assert first.summary(out) == f"done 3, skipped 0 (already complete), rejected 2 -> {out} (reasons in {REJECTS})"

    # the same run again: everything is complete, no model is loaded
    with monkeypatch.context() as m:
        _no_models(m)
        again = run_videos(cfg, [tmp_path / "in"], out, **go)
    assert (len(again.written), len(again.skipped), len(again.rejects)) == (0, 3, 2)

    # a run killed before one clip's json: only that clip is generated again
    victim = videos[1].stem
    (out / f"{victim}.json").unlink()
    resumed = run_videos(cfg, [tmp_path / "in"], out, **go)
    assert [r["id"] for r in resumed.written] == [victim] and len(resumed.skipped) == 2

    # other settings or --overwrite: every clip again
    assert len(run_videos(cfg, [tmp_path / "in"], out, **{**go, "steps": 3}).written) == 3
    assert len(run_videos(cfg, [tmp_path / "in"], out, **{**go, "steps": 3}, overwrite=True).written) == 3

    # a new run without rejects removes the old rejects.csv
    (tmp_path / "in" / "broken.mp4").unlink()
    (tmp_path / "in" / "tiny.mp4").unlink()
    clean = run_videos(cfg, [tmp_path / "in"], out, **{**go, "steps": 3})
    assert len(clean.skipped) == 3 and not clean.rejects and not (out / REJECTS).exists()


def test_a_given_prompt_wins_and_an_empty_one_means_none(exported, tmp_path, demo_config):
    root, specs, folder = exported
    cfg = demo_config(root, *E2E)
    (video,) = _inputs(tmp_path / "in", specs, 1, bad=False)
    given = run_videos(cfg, [video], tmp_path / "a", mapper=str(folder), configured=False, steps=2,
                       prompt="red beep", progress=False).written[0]
    assert given["prompt"] == "red beep" and given["prompt_from"] == "given" and given["labels"] is None
    none = run_videos(cfg, [video], tmp_path / "b", mapper=str(folder), configured=False, steps=2, prompt="",
                      progress=False).written[0]
    assert none["prompt"] is None and none["prompt_from"] == "none"


def test_every_input_rejected_fails_before_any_model_loads(exported, tmp_path, demo_config, monkeypatch):
    root, specs, folder = exported
    _inputs(tmp_path / "in", specs, 0)
    _no_models(monkeypatch)
    with pytest.raises(RuntimeError, match="all 2 inputs were rejected"):
        run_videos(demo_config(root, *E2E), [tmp_path / "in"], tmp_path / "out", mapper=str(folder),
                   configured=False, progress=False)
    assert len((tmp_path / "out" / REJECTS).read_text().splitlines()) == 3


def test_the_command_line_prints_reasons_labels_and_the_summary(exported, tmp_path, monkeypatch):
    root, specs, folder = exported
    (video,) = _inputs(tmp_path / "in", specs, 1)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, [*CONFIG, "--no-progress", "generate", "--mapper", str(folder), "in", "-o", "out",
                                   "--steps", "2"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(ln.startswith(f"{video.stem}: ") and "(auto: " in ln for ln in lines), res.output
    assert any("rejected in/tiny.mp4: absurd_dimensions (8x8; allowed sides 16..8192" in ln for ln in lines)
    assert lines[-1] == f"done 1, skipped 0 (already complete), rejected 2 -> out (reasons in {REJECTS})"
    (tmp_path / "in" / video.name).unlink()
    res = CliRunner().invoke(app, [*CONFIG, "generate", "--mapper", str(folder), "in", "-o", "out"])
    assert res.exit_code == 1 and "all 2 inputs were rejected" in res.output and "Traceback" not in res.output


def test_a_second_run_into_the_same_folder_is_refused(exported, tmp_path, monkeypatch):
    """Two processes: one holds the output folder's lock (as a run in progress does), the second run is refused
    with one line naming the first's pid, and writes nothing."""
    root, specs, folder = exported
    (video,) = _inputs(tmp_path / "in", specs, 1, bad=False)
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys, time\nfrom pathlib import Path\nfrom v2a.io import exclusive_lock\n"
            "with exclusive_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-c", code, str(out / LOCK)], stdout=subprocess.PIPE, env=env)
    try:
        assert first.stdout.readline().strip() == b"held"
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(app, [*CONFIG, "generate", "--mapper", str(folder), str(video), "-o", "out"])
    finally:
        first.kill()
        first.wait()
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and f"pid {first.pid}" in errors[0] and "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == [LOCK]
