"""Strict configuration (v2a/schema.py): typed params/runtime per stage, one-line errors, no traceback."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lab.cli import app
from v2a.config import load_config
from v2a.schema import ConfigError, stage_models

REPO = Path(__file__).resolve().parent.parent
DEMO = ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml")]

TOY = {
    "paths": {"videos": "in", "cache": "cache"},
    "targets": {"all": ["a", "b"]},
    "stages": {
        "a": {"module": "toy_typed_stage", "inputs": ["videos"], "checkpoints": ["weights"],
              "params": {"size": 3}, "runtime": {"batch_size": 8}},
        "b": {"module": "toy_stages", "needs": ["a"], "params": {"anything": [1, 2]}},
    },
}


def write(tmp: Path, cfg: dict, name: str = "stages.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def problems(tmp: Path, sets: list[str], cfg: dict = TOY) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config([write(tmp, cfg)], sets)
    return e.value.problems


def test_defaults_filled_and_runtime_kept_apart(tmp_path):
    cfg = load_config([write(tmp_path, TOY)])
    assert cfg.stage("a").params == {"size": 3, "mode": "exact", "weights": None}
    assert cfg.stage("a").runtime == {"batch_size": 8, "device": "cpu"}
    assert cfg.stage("b").params == {"anything": [1, 2]}  # a module without Params: not checked
    assert cfg.paths == {"videos": "in", "labels": None, "cache": "cache", "runs": None, "outputs": None,
                         "train_ids": None}
    assert load_config([write(tmp_path, TOY)], ["stages.a.params.size=7"]).stage("a").params["size"] == 7


@pytest.mark.parametrize("sets, line", [
    (["stages.a.params.sise=3"], "stages.a.params.sise: unknown key (did you mean 'size'?)"),
    (["stages.a.runtime.batch_sise=3"], "stages.a.runtime.batch_sise: unknown key (did you mean 'batch_size'?)"),
    (["stages.a.params.size=abc"], "stages.a.params.size: got 'abc'; input should be a valid integer, unable to "
                                   "parse string as an integer"),
    (["stages.a.params.size=0"], "stages.a.params.size: got 0; input should be greater than or equal to 1"),
    (["stages.a.params.mode=quick"], "stages.a.params.mode: got 'quick'; input should be 'fast' or 'exact'"),
    (["stages.a.params.device=cuda"], "stages.a.params.device: a runtime option; set it under "
                                      "stages.a.runtime.device"),
    (["stages.a.params=3"], "stages.a.params: got 3; expected a mapping of keys to values"),
    (["stages.a.needz=[b]"], "stages.a.needz: unknown key (did you mean 'needs'?)"),
    (["stages.b.needs=[aa]"], "stages.b.needs: unknown stage 'aa' (did you mean 'a'?)"),
    (["stages.a.inputs=[vidoes]"], "stages.a.inputs: unknown path 'vidoes' (did you mean 'videos'?)"),
    (["stages.a.checkpoints=[weight]"], "stages.a.checkpoints: unknown params key 'weight' (did you mean "
                                        "'weights'?)"),
    (["stages.a.module=toy_nothere"], "stages.a.module: cannot import 'toy_nothere': No module named "
                                      "'toy_nothere'"),
    (["stages.aa.params.size=1"], "stages.aa: unknown stage (did you mean 'a'?)"),
    (["targets.all=[a, bb]"], "targets.all: unknown stage 'bb' (did you mean 'b'?)"),
    (["paths.vidoes=x"], "paths.vidoes: unknown key (did you mean 'videos'?)"),
    (["path.videos=x"], "path: unknown top-level key (did you mean 'paths'?)"),
    (["stages.a.needs=[b]"], "stages.yaml: dependency cycle a -> b -> a"),
    (["novalue"], "--set novalue: expected KEY=VALUE with a dotted key, e.g. stages.cavp.runtime.batch_size=16"),
    (["stages..a=1"], "--set stages..a=1: the key 'stages..a' has an empty part"),
])
def test_each_problem_is_one_line(tmp_path, sets, line):
    assert problems(tmp_path, sets) == [line]


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(tmp_path, ["stages.a.params.sise=3", "stages.a.runtime.device=1", "pathz.x=1"])
    assert found == ["pathz: unknown top-level key (did you mean 'paths'?)",
                     "stages.a.runtime.device: got 1; input should be a valid string",
                     "stages.a.params.sise: unknown key (did you mean 'size'?)"]


def test_every_stage_of_stages_yaml_has_a_schema_and_the_files_are_valid():
    for name, spec in load_config([REPO / "stages.yaml"]).stages.items():
        params, runtime = stage_models(spec.module)
        assert params is not None and runtime is not None, name
    demo = load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"])
    assert demo.stage("cavp").params["model"] == "tiny"
    assert demo.stage("cavp").params["chunk_frames"] == 40  # default filled in from pipeline/cavp.py's Params
    assert "device" not in demo.stage("train").params and demo.stage("train").runtime["device"] == "cpu"


def cli(*args: str):
    return CliRunner().invoke(app, [*DEMO, *args])


@pytest.mark.parametrize("args, line", [
    (["--set", "stages.cavp.params.chekpoint=x", "status"],
     "error: stages.cavp.params.chekpoint: unknown key (did you mean 'checkpoint'?)"),
    (["--set", "stages.cavp.runtime.batch_sise=3", "status"],
     "error: stages.cavp.runtime.batch_sise: unknown key (did you mean 'batch_size'?)"),
    (["--set", "stages.frames.params.shard_size=abc", "run", "frames"],
     "error: stages.frames.params.shard_size: got 'abc'; input should be a valid integer, unable to parse string as "
     "an integer"),
    (["--set", "stages.frames.params.seconds=400", "status"],
     "error: stages.frames.params: 1600 frames of 224 px do not fit in one JPEG strip (65500 rows); use codec h264 "
     "or raw"),
    (["--set", "stages.frames.params.codec=vp9", "status"],
     "error: stages.frames.params.codec: got 'vp9'; input should be 'jpeg', 'h264' or 'raw'"),
    (["--set", "stages.train.params.fusion=add", "--set", "stages.train.params.encoders=cavp", "status"],
     "error: stages.train.params: train params: fusion='add' needs encoders='both' (got 'cavp')"),
    (["--set", "stages.train.params.device=cpu", "run", "train"],
     "error: stages.train.params.device: a runtime option; set it under stages.train.runtime.device"),
    (["--set", "stages.cavpp.params.model=tiny", "status"], "error: stages.cavpp: unknown stage (did you mean 'cavp'?)"),
    (["--set", "paths.vidoes=x", "status"], "error: paths.vidoes: unknown key (did you mean 'videos'?)"),
    (["--set", "foo", "status"],
     "error: --set foo: expected KEY=VALUE with a dotted key, e.g. stages.cavp.runtime.batch_size=16"),
    (["stage", "frams"], "error: unknown stage 'frams' (did you mean 'frames'? stages: frames, cavp, timechat, "
                         "audiomae, clip, clap, train, generate, evaluate, dynamics; targets: extract, extract_v2a, "
                         "train, generate, evaluate, dynamics)"),
])
def test_cli_user_errors_are_one_line_exit_2(args, line):
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [line]
    assert "Traceback" not in res.output


def test_cli_missing_or_broken_config_file(tmp_path):
    res = CliRunner().invoke(app, ["-c", str(tmp_path / "nope.yaml"), "status"])
    assert res.exit_code == 2 and res.stderr.splitlines() == [f"error: configuration file {tmp_path / 'nope.yaml'} "
                                                              "does not exist"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  cavp: [1\n")
    res = CliRunner().invoke(app, ["-c", str(bad), "status"])
    assert res.exit_code == 2 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith(f"error: {bad}: not valid YAML: ") and "line 3" in res.stderr
    overlay = write(tmp_path, {"pathz": {"videos": "x"}}, "over.yaml")
    res = CliRunner().invoke(app, [*DEMO, "-c", str(overlay), "status"])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == ["error: pathz: unknown top-level key (did you mean 'paths'?)"]


def test_status_names_each_missing_or_empty_input(tmp_path):
    (tmp_path / "videos").mkdir()
    sets = ["--set", f"paths.videos={tmp_path / 'videos'}", "--set", f"paths.labels={tmp_path / 'labels.csv'}",
            "--set", f"paths.cache={tmp_path / 'cache'}", "--set", f"paths.runs={tmp_path / 'runs'}",
            "--set", f"paths.outputs={tmp_path / 'out'}"]
    res = cli(*sets, "status")
    assert res.exit_code == 1
    assert [ln for ln in res.stdout.splitlines() if ln.startswith("problem:")] == [
        f"problem: paths.videos: {tmp_path / 'videos'} holds no files (input of stage frames)",
        f"problem: paths.labels: {tmp_path / 'labels.csv'} does not exist (input of stage frames)"]
    (tmp_path / "videos" / "a.mp4").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("")
    res = cli(*sets, "status")
    assert res.exit_code == 1 and "problem: paths.videos" not in res.stdout
    assert f"problem: paths.labels: {tmp_path / 'labels.csv'} is an empty file (input of stage frames)" in res.stdout
    (tmp_path / "labels.csv").write_text("a,0,dog barking,test\n")
    res = cli(*sets, "status")
    assert res.exit_code == 0, res.output
    assert "problem:" not in res.stdout and res.stdout.startswith("frames     stale")


def test_run_with_a_missing_input_folder_is_one_line(tmp_path):
    res = cli("--set", f"paths.videos={tmp_path / 'nope'}", "--set", f"paths.cache={tmp_path / 'cache'}",
              "--no-progress", "run", "frames")
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and f"{tmp_path / 'nope'}" in errors[0], res.stderr
