"""The preflight (`v2a check`, and `v2a run` before its first stage): every problem of the chain at once, in
seconds, offline; checkpoint keys and shapes against the full models built on the meta device."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from v2a.check import format_problems, preflight
from v2a.config import load_config
from v2a.runner import PreflightError, Runner
from v2a.weights import load_manifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("V2A_WEIGHTS", raising=False)
    monkeypatch.delenv("V2A_MANIFEST", raising=False)


def full_project(tmp_path: Path, overlay: dict | None = None) -> list[Path]:
    shutil.copy(REPO / "stages.yaml", tmp_path / "stages.yaml")
    files = [tmp_path / "stages.yaml"]
    if overlay:
        (tmp_path / "over.yaml").write_text(yaml.safe_dump(overlay))
        files.append(tmp_path / "over.yaml")
    return files


def test_full_config_without_weights_names_every_missing_file(tmp_path, offline, monkeypatch):
    import socket

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(full_project(tmp_path))
    def no_network(*args, **kw):
        raise AssertionError("the preflight tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # offline: no call may wait on a network timeout
    problems = preflight(cfg, cfg.order())
    table = format_problems(problems)
    for name, e in load_manifest().items():
        assert f"weight {name} is missing" in table
        if e.file:
            assert str(tmp_path / "weights" / e.file) in table
    assert str(tmp_path / "data/vggsound/video") in table and str(tmp_path / "data/vggsound/vggsound.csv") in table
    assert "half=true needs a CUDA device" in table  # timechat's fp16 ViT on a CPU-only machine
    # 13 checkpoint params (audioldm2 twice), the V2A-Mapper's CLIP and CLAP, 2 inputs, timechat's half
    assert len(problems) == 13 + 2 + 2 + 1
    assert sum("audioldm2 is missing" in p.problem for p in problems) == 2  # train and generate


def test_cli_check_and_run_stop_before_anything_runs(tmp_path, offline, keep_logging):
    from lab.cli import app

    files = full_project(tmp_path)
    args = [a for f in files for a in ("-c", str(f))]
    t0 = time.time()
    res = CliRunner().invoke(app, args + ["check"])
    assert res.exit_code == 1 and re.search(r"\n1[78] problem\(s\)", res.output)  # 17 where CUDA exists
    assert "v2a weights fetch eva_vit_g" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, args + ["run", "extract"])
    assert res.exit_code == 1 and not (tmp_path / "cache").exists()  # the frames stage never started
    res = CliRunner().invoke(app, args + ["status"])
    assert res.exit_code == 1 and "weight cavp is missing" in res.output
    assert time.time() - t0 < 60


def full_shape_file(path: Path, shapes: dict[str, tuple], wrap: str | None = None) -> Path:
    """A checkpoint with the full model's key names and shapes that takes a few KB: every tensor is a stride-0
    view of one element (torch.save keeps the view; a memory-mapped load gives back the shapes)."""
    one = torch.zeros(1)
    sd = {k: one.expand(*s) if s else one[0] for k, s in shapes.items()}
    torch.save({wrap: sd} if wrap else sd, path)
    return path


def meta_shapes(build) -> dict[str, tuple]:
    with torch.device("meta"):
        m = build()
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def test_cavp_checkpoint_keys_and_shapes_are_checked(tmp_path):
    from frozen.cavp import CAVPConfig, CAVPVideoEncoder, preflight as cavp_preflight

    shapes = {f"module.{k}": s for k, s in meta_shapes(lambda: CAVPVideoEncoder(CAVPConfig.full())).items()}
    good = full_shape_file(tmp_path / "good.ckpt", shapes, wrap="state_dict")
    assert good.stat().st_size < 2_000_000
    assert cavp_preflight({"model": "full", "checkpoint": str(good)}, "cpu") == []
    renamed = dict(shapes)
    renamed["module.video_project_head.weightt"] = renamed.pop("module.video_project_head.weight")
    bad = full_shape_file(tmp_path / "bad.ckpt", renamed, wrap="state_dict")
    msgs = cavp_preflight({"model": "full", "checkpoint": str(bad)}, "cpu")
    assert len(msgs) == 1 and "1 of the model's" in msgs[0] and "video_project_head.weight" in msgs[0]
    wrong = dict(shapes, **{"module.video_project_head.weight": (256, 2048)})
    msgs = cavp_preflight({"model": "full", "checkpoint": str(full_shape_file(tmp_path / "w.ckpt", wrong))}, "cpu")
    assert msgs == ["cavp checkpoint w.ckpt: 1 weights have the wrong shape, e.g. video_project_head.weight "
                    "(256, 2048) where the model has (512, 2048)"]
    assert "half=true" in cavp_preflight({"model": "full", "checkpoint": str(good), "half": True}, "cpu")[0]


def test_stage_preflight_reports_a_wrong_key_in_the_table(tmp_path, offline, monkeypatch):
    """Through the configuration: a PANNs file with one renamed key (the loader refuses unexpected keys)."""
    from frozen.panns import Cnn14

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shapes = meta_shapes(Cnn14)
    k = next(iter(shapes))
    shapes[k + "_typo"] = shapes.pop(k)
    bad = full_shape_file(tmp_path / "Cnn14_bad.pth", shapes, wrap="model")
    cfg = load_config(full_project(tmp_path, {"stages": {"evaluate": {"params": {"panns_ckpt": str(bad)}}}}))
    problems = [p for p in preflight(cfg, ["evaluate"]) if p.item == "params.panns_ckpt"]
    assert [p.problem for p in problems] == [
        f"panns checkpoint Cnn14_bad.pth: 1 of the model's {len(shapes)} weights are missing, e.g. ['{k}']",
        f"panns checkpoint Cnn14_bad.pth: 1 unexpected weights, e.g. ['{k}_typo']"]


def test_device_asked_for_without_cuda(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(full_project(tmp_path, {"stages": {"cavp": {"runtime": {"device": "cuda:0"}}}}))
    found = [p for p in preflight(cfg, ["cavp"]) if p.item == "runtime.device"]
    assert len(found) == 1 and "'cuda:0' asked for, but CUDA is not available" in found[0].problem


def test_demo_config_has_no_false_alarms(tmp_path, offline):
    """Tiny models everywhere: only the inputs are checked; present inputs give an empty report."""
    shutil.copy(REPO / "stages.yaml", tmp_path / "stages.yaml")
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo.yaml", tmp_path / "configs" / "demo.yaml")
    cfg = load_config([tmp_path / "stages.yaml", tmp_path / "configs" / "demo.yaml"])
    assert [p.item for p in preflight(cfg, cfg.order())] == ["paths.videos", "paths.labels"]
    (tmp_path / "demo" / "videos").mkdir(parents=True)
    (tmp_path / "demo" / "videos" / "a.mp4").write_bytes(b"x")
    (tmp_path / "demo" / "videos" / "labels.csv").write_text("youtube_id,start_seconds,label,split\n")
    assert preflight(cfg, cfg.order()) == []


def test_runner_preflight_covers_only_stages_that_will_run(tmp_path):
    base = {"paths": {"videos": "in", "cache": "cache"},
            "stages": {"a": {"module": "toy_stages", "inputs": ["videos"], "params": {"x": 1}},
                       "b": {"module": "toy_stages", "needs": ["a"], "params": {}}}}
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump(base))
    r = Runner(load_config([tmp_path / "stages.yaml"]))
    with pytest.raises(PreflightError, match=r"paths\.videos .* does not exist"):
        r.run(["b"])
    assert not (tmp_path / "cache").exists()
    (tmp_path / "in").mkdir()
    with pytest.raises(PreflightError, match="is an empty folder"):
        r.run(["b"])
    (tmp_path / "in" / "x.mp4").write_bytes(b"x")
    assert r.run(["b"]) == ["a", "b"]
    assert Runner(load_config([tmp_path / "stages.yaml"])).run(["b"]) == []
