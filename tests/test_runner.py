"""The stage runner: fingerprints, fresh/stale decisions, rerunning one stage, dependency order."""

from pathlib import Path

import pytest
import yaml

from v2a.config import load_config
from v2a.runner import Runner

BASE = {
    "paths": {"videos": "in", "cache": "cache"},
    "targets": {"extract": ["a", "b1", "b2"]},
    "stages": {
        "a": {"module": "toy_stages", "inputs": ["videos"], "params": {"x": 1}},
        "b1": {"module": "toy_stages", "needs": ["a"], "params": {"y": 1}, "runtime": {"batch_size": 4}},
        "b2": {"module": "toy_stages", "needs": ["a"], "params": {"z": 1}},
        "c": {"module": "toy_stages", "needs": ["b1", "b2"], "params": {}},
    },
}


def write(tmp: Path, cfg: dict, name="stages.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def runs(tmp: Path, name: str) -> int:
    p = tmp / "cache" / f"{name}.runs"
    return int(p.read_text()) if p.exists() else 0


@pytest.fixture
def project(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes(b"x")
    return tmp_path


def test_first_run_runs_everything_in_order_then_nothing(project):
    cfg = load_config([write(project, BASE)])
    assert cfg.closure(["c"]) == ["a", "b1", "b2", "c"]
    r = Runner(cfg)
    assert [r.status(n)[1] for n in cfg.order()] == [["never run"]] * 4
    assert r.run(["c"]) == ["a", "b1", "b2", "c"]
    r2 = Runner(load_config([write(project, BASE)]))
    assert all(r2.status(n)[0] for n in cfg.order())
    assert r2.run(["c"]) == []
    assert [runs(project, n) for n in ("a", "b1", "b2", "c")] == [1, 1, 1, 1]


def test_param_change_reruns_that_stage_and_downstream_only(project):
    Runner(load_config([write(project, BASE)])).run(["c"])
    over = write(project, {"stages": {"b1": {"params": {"y": 2}}}}, "over.yaml")
    r = Runner(load_config([project / "stages.yaml", over]))
    st = {n: r.status(n) for n in ("a", "b1", "b2", "c")}
    assert st["a"][0] and st["b2"][0]
    assert st["b1"] == (False, ["params changed"])
    assert st["c"] == (False, ["input b1 changed"])
    assert r.run(["c"]) == ["b1", "c"]
    assert [runs(project, n) for n in ("a", "b1", "b2", "c")] == [1, 2, 1, 2]


def test_runtime_options_are_not_fingerprinted(project):
    Runner(load_config([write(project, BASE)])).run(["c"])
    r = Runner(load_config([project / "stages.yaml"], ["stages.b1.runtime.batch_size=64"]))
    assert r.status("b1")[0]


def test_input_change_makes_first_stage_stale(project):
    Runner(load_config([write(project, BASE)])).run(["extract"])
    (project / "in" / "clip2.mp4").write_bytes(b"yy")
    r = Runner(load_config([project / "stages.yaml"]))
    assert r.status("a") == (False, ["input videos changed"])
    assert r.status("b1") == (False, ["input a changed"])


def test_force_and_only(project):
    r = Runner(load_config([write(project, BASE)]))
    r.run(["extract"])
    assert Runner(load_config([project / "stages.yaml"])).run(["b2"], force=True, only=True) == ["b2"]
    assert [runs(project, n) for n in ("a", "b1", "b2")] == [1, 1, 2]


def test_stage_alone_refuses_stale_upstream(project):
    r = Runner(load_config([write(project, BASE)]))
    with pytest.raises(RuntimeError, match="needs a, which is stale"):
        r.run(["b1"], only=True)


def test_set_override_and_bad_config(project):
    cfg = load_config([write(project, BASE)], ["stages.a.params.x=5"])
    assert cfg.stage("a").params == {"x": 5}
    bad = dict(BASE, stages={"a": {"module": "toy_stages", "needs": ["nope"]}})
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        load_config([write(project, bad, "bad.yaml")])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config([project / "stages.yaml"], ["novalue"])


def test_stale_upstream_makes_every_stage_below_stale(project):
    """A stage whose own record matches is still stale while a stage it needs is: its output was made from
    upstream outputs no longer on disk (another run wrote over them). The reason names the stale upstream."""
    Runner(load_config([write(project, BASE)])).run(["c"])
    over = write(project, {"stages": {"a": {"params": {"x": 2}}}}, "over.yaml")
    Runner(load_config([project / "stages.yaml", over])).run(["a"], only=True)  # other params written over a
    r = Runner(load_config([project / "stages.yaml"]))
    assert r.own_status("b1") == (True, []) and r.own_status("c") == (True, [])  # their records match
    assert r.status("a") == (False, ["params changed"])
    assert r.status("b1") == (False, ["upstream a stale"])
    assert r.status("c") == (False, ["upstream b1 stale", "upstream b2 stale"])
    assert r.statuses(["a", "c"]) == {"a": r.status("a"), "c": r.status("c")}
    with pytest.raises(RuntimeError, match=r"needs b1, which is stale \(upstream a stale\)"):
        r.run(["c"], only=True)  # alone it refuses; with its upstream, only `a` is recomputed
    assert Runner(load_config([project / "stages.yaml"])).run(["c"]) == ["a"]
    assert [runs(project, n) for n in ("a", "b1", "b2", "c")] == [3, 1, 1, 1]
    r = Runner(load_config([project / "stages.yaml"]))
    assert all(r.status(n) == (True, []) for n in ("a", "b1", "b2", "c"))


def test_incomplete_upstream_makes_downstream_stale(project):
    Runner(load_config([write(project, BASE)])).run(["c"])
    rec = project / "cache" / "b2.record.json"
    rec.write_text(rec.read_text().replace('"complete": true', '"complete": false'))
    r = Runner(load_config([project / "stages.yaml"]))
    assert r.status("b2") == (False, ["incomplete"]) and r.status("b1") == (True, [])
    assert r.status("c") == (False, ["upstream b2 stale"])


def test_used_stages_are_what_the_last_stages_need(project):
    side = dict(BASE, stages={**BASE["stages"], "side": {"module": "toy_stages", "needs": ["a"], "params": {}}})
    cfg = load_config([write(project, side)])
    assert cfg.used_stages() == ["a", "b1", "b2", "c"]  # `side` (needed by none, one step from a) is not used
    repo = Path(__file__).resolve().parent.parent
    mfm = load_config([repo / "stages.yaml"])
    assert mfm.used_stages() == ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
    v2a = load_config([repo / "stages.yaml", repo / "configs" / "v2a-mapper.yaml"])
    assert v2a.used_stages() == ["frames", "clip", "clap", "train", "generate", "evaluate"]
    only_extract = dict(BASE, stages={k: v for k, v in BASE["stages"].items() if k != "c"})
    assert load_config([write(project, only_extract, "x.yaml")]).used_stages() == ["a", "b1", "b2"]


def test_run_folders_are_built_in_one_place(project):
    from v2a.config import RUN_FOLDERS

    cfg = load_config([write(project, dict(BASE, paths={**BASE["paths"], "runs": "r", "outputs": "o"}))])
    dirs = [cfg.mapper_dir, cfg.generated_dir, cfg.evaluation_dir, cfg.ablations_dir, cfg.videos_dir]
    assert [d.name for d in dirs] == list(RUN_FOLDERS)
    assert [d.parent for d in dirs] == [project / "r"] + [project / "o"] * 4
    assert cfg.folder_evaluation_dir(project / "theirs") == project / "o" / "evaluate-theirs"
