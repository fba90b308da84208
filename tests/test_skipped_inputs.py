"""Every skipped input is listed with its reason; a pipeline folder with an unknown mapper kind is refused with one
line; booleans are not numbers in the configuration (issue 22)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.demo_data import make_demo_clips
from pipeline.inputs import discover
from v2a.config import ConfigError, load_config
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent
BASE = [REPO / "stages.yaml", REPO / "configs" / "demo.yaml"]


def _odd_entries(d: Path) -> dict[str, str]:
    """Entries named like videos that are no video file: {id: the reason's start}."""
    (d / "loop.mp4").symlink_to("loop.mp4")  # a link to itself
    (d / "ping.mkv").symlink_to("pong.mkv")
    (d / "pong.mkv").symlink_to("ping.mkv")
    (d / "gone.mp4").symlink_to("nowhere.mp4")
    (d / "folder.mp4").mkdir()
    os.mkfifo(d / "pipe.webm")
    (d / "sub").mkdir()  # a plain folder: no clip, no reject
    (d / "old.mp4").mkdir()
    return {"loop": "symlink_loop: loop.mp4 is a symbolic link that leads back to itself",
            "ping": "symlink_loop: ping.mkv", "pong": "symlink_loop: pong.mkv",
            "gone": "broken_link: gone.mp4 is a symbolic link to 'nowhere.mp4', which does not exist",
            "folder": "directory: folder.mp4 is a folder, not a video file", "old": "directory: old.mp4",
            "pipe": "not_a_regular_file: pipe.webm is a named pipe, not a video file"}


def test_discover_lists_what_is_not_a_file(tmp_path):
    want = _odd_entries(tmp_path)
    (tmp_path / "folder.mp4" / "inner.mp4").write_bytes(b"x")  # a file inside the folder is still found
    (tmp_path / "sub" / "real.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").symlink_to("notes.txt")  # not a video name: skipped as before
    clips = {c.id: c for c in discover(tmp_path)}
    assert sorted(clips) == sorted([*want, "inner", "real"])
    for cid, reason in want.items():
        assert clips[cid].problem.startswith(reason), clips[cid].problem
    assert clips["inner"].problem == "" and clips["real"].problem == ""


def test_a_reject_does_not_take_the_id_of_a_clip(tmp_path):
    (tmp_path / "a.mp4").mkdir()
    (tmp_path / "a.mkv").write_bytes(b"x")
    clips = discover(tmp_path)
    assert [(c.source.rsplit("/", 1)[1], c.problem.split(":")[0]) for c in clips] == [("a.mkv", ""),
                                                                                     ("a.mp4", "directory")]


def test_the_frames_stage_lists_them_in_rejects_csv(tmp_path):
    videos = tmp_path / "videos"
    make_demo_clips(videos, n=3, seed=5)
    want = _odd_entries(videos)
    _huge_avi(videos / "huge.avi", tmp_path / "ok.avi")
    want["huge"] = "absurd_dimensions: 30000x30000 declared in the stream's header"
    cfg = yaml.safe_load((REPO / "stages.yaml").read_text())
    cfg["paths"] = {"videos": str(videos), "labels": None, "cache": str(tmp_path / "cache"),
                    "runs": str(tmp_path / "runs"), "outputs": str(tmp_path / "out")}
    cfg["stages"] = {"frames": cfg["stages"]["frames"]}
    cfg["stages"]["frames"]["params"].update({"shard_size": 4, "max_reject_share": 0.9})
    cfg["targets"] = {}
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump(cfg))
    Runner(load_config([tmp_path / "stages.yaml"])).run(["frames"], progress=False)
    rows = list(csv.DictReader(open(tmp_path / "cache" / "frames" / "rejects.csv", encoding="utf-8")))
    got = {r["id"]: r["reason"] for r in rows}
    assert sorted(got) == sorted(want) and {r["stage"] for r in rows} == {"frames"}
    for cid, reason in want.items():
        assert got[cid].startswith(reason), got[cid]


@pytest.mark.parametrize("setting,line", [
    ("stages.frames.params.seconds=yes", "stages.frames.params.seconds: got True; expected a number (float), not "
                                         "true/false (YAML reads yes, no, on, off as booleans)"),
    ("stages.cavp.runtime.batch_size=true", "stages.cavp.runtime.batch_size: got True; expected a number (int)"),
    ("stages.train.params.betas=[0.9, on]", "stages.train.params.betas[1]: got True; expected a number (float)"),
    ("experiments.epochs_scale=yes", "experiments.epochs_scale: got True; expected a number (float)"),
    ("stages.train.runtime.bf16=1", "stages.train.runtime.bf16: got 1; expected true or false"),
    ("stages.train=null", "stages.train: is empty (null); expected the stage's mapping (module, needs, params, ...)"),
])
def test_booleans_are_not_numbers_and_a_null_stage_is_named(setting, line):
    with pytest.raises(ConfigError) as err:
        load_config(BASE, [setting])
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(line), err.value.problems


def test_numbers_and_booleans_in_their_places_still_load():
    cfg = load_config(BASE, ["stages.frames.params.seconds=10", "stages.train.runtime.bf16=false",
                             "stages.train.params.betas=[0.9, 0.95]", "stages.cavp.params.half=true"])
    assert cfg.stage("frames").params["seconds"] == 10.0 and cfg.stage("train").settings.betas == (0.9, 0.95)


def test_a_pipeline_folder_with_an_unknown_mapper_kind_is_refused(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from e2e_project import tiny_pipeline
    from infer.pipeline import MFMMapperPipeline

    folder = tiny_pipeline().save_pretrained(tmp_path / "pipe")
    spec_path = folder / "mapper" / "config.json"
    spec = json.loads(spec_path.read_text())
    assert spec["kind"] == "autoregressive"
    for kind in ("autoregresive", "v2a_other", 5):
        spec_path.write_text(json.dumps({**spec, "kind": kind}))
        with pytest.raises(ValueError) as err:
            MFMMapperPipeline.from_pretrained(folder, device="cpu")
        assert str(err.value) == (f"{folder}: mapper/config.json: the mapper's spec names an unknown mapper kind "
                                  f"{kind!r}; this code builds autoregressive, diffusion, v2a_regression, "
                                  "v2a_diffusion")
    spec_path.write_text(json.dumps({**spec, "kind": "v2a_regression"}))  # a known kind, another family's fields
    with pytest.raises(ValueError, match=f"^{folder}: mapper/config.json: .*unexpected keyword argument"):
        MFMMapperPipeline.from_pretrained(folder, device="cpu")


def _mjpeg_avi(path: Path, side: int = 64, n: int = 8) -> bytes:
    """A small MJPEG AVI (PyAV), returned as bytes: each frame's SOF0 header carries its size."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mjpeg", rate=4)
        s.width, s.height, s.pix_fmt = side, side, "yuvj420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 20 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path.read_bytes()


def _huge_avi(path: Path, ok: Path) -> None:
    data = _mjpeg_avi(ok)
    sof = b"\xff\xc0\x00\x11\x08" + (64).to_bytes(2, "big") * 2
    assert data.count(sof) == 8
    path.write_bytes(data.replace(sof, b"\xff\xc0\x00\x11\x08" + (30000).to_bytes(2, "big") * 2))


def test_a_huge_declared_size_is_reported_as_its_dimensions(tmp_path):
    """The AVI header says 64x64, every frame's JPEG header 30000x30000 (FFmpeg will not allocate 9e8 pixels): the
    reject says absurd_dimensions with the declared size, not a decode error."""
    from pipeline.media import MediaError, decode_clip

    _huge_avi(tmp_path / "huge.avi", tmp_path / "ok.avi")
    assert decode_clip(tmp_path / "ok.avi", seconds=2.0).width == 64
    with pytest.raises(MediaError) as err:
        decode_clip(tmp_path / "huge.avi", seconds=2.0)
    assert err.value.reason == "absurd_dimensions"
    assert str(err.value).startswith("absurd_dimensions (30000x30000 declared in the stream's header")
    with pytest.raises(MediaError, match=r"^absurd_dimensions \(30000x30000"):  # again: FFmpeg repeats itself
        decode_clip(io.BytesIO((tmp_path / "huge.avi").read_bytes()), seconds=2.0)
