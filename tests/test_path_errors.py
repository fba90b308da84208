"""Every path mistake is one line (issue 22): a file where a folder goes, a folder inside a file, an unwritable folder
-> ``error: ...`` naming the path and what was expected, exit code 2 (the preflight: its table), nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from v2a.check import check_output_folders, preflight
from v2a.config import ConfigError, load_config
from v2a.io import InputError, check_folder, folder_problem

REPO = Path(__file__).resolve().parent.parent
BASE = [REPO / "stages.yaml", REPO / "configs" / "demo.yaml"]


def _sets(root: Path, **paths: Path) -> list[str]:
    where = {"videos": root / "videos", "labels": root / "videos" / "labels.csv", "cache": root / "cache",
             "runs": root / "runs", "outputs": root / "out", **paths}
    return [f"paths.{k}={v}" for k, v in where.items()]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _cli(root: Path, *args: str, **paths: Path):
    opts = [x for f in BASE for x in ("-c", str(f))] + [x for s in _sets(root, **paths) for x in ("--set", s)]
    return CliRunner().invoke(app, [*opts, *args])


def _one_error_line(res, *needles: str) -> str:
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def test_folder_problem_names_the_path_and_what_was_expected(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert folder_problem(tmp_path / "new" / "deeper") is None  # creatable
    assert folder_problem(tmp_path) is None
    assert folder_problem(f, "the runs folder") == \
        f"{f} is a file, not the runs folder; move it away or name another path"
    assert folder_problem(f / "runs", "the runs folder").startswith(
        f"{f} is a file, so {f / 'runs'} cannot be the runs")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert "broken symbolic link" in folder_problem(link / "x")
    with pytest.raises(InputError, match="is a file"):
        check_folder(f)
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_an_unwritable_folder_is_named(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != ro)  # root may write anywhere: the rule, not chmod
    assert folder_problem(ro / "runs", "the runs folder") == f"{ro} is not writable by this user, so {ro / 'runs'} " \
                                                             "cannot be the runs folder"
    assert folder_problem(ro, "the runs folder") == \
        f"{ro} is not writable by this user (the runs folder is written there)"
    assert folder_problem(ro, writable=False) is None


@pytest.mark.parametrize("name,what", [("cache", "the feature cache folder"), ("runs", "the runs folder"),
                                       ("outputs", "the outputs folder")])
def test_a_file_named_as_a_folder_stops_the_configuration(tmp_path, name, what):
    f = tmp_path / "a-file"
    f.write_text("mine\n")
    with pytest.raises(ConfigError) as err:
        load_config(BASE, _sets(tmp_path, **{name: f}))
    assert err.value.problems == [f"paths.{name}: {f} is a file, not {what}; move it away or name another path"]
    with pytest.raises(ConfigError, match=f"paths.{name}: {f} is a file, so {f / 'sub'} cannot be"):
        load_config(BASE, _sets(tmp_path, **{name: f / "sub"}))


@pytest.mark.parametrize("args", [["status"], ["run", "train"], ["stage", "frames"], ["generate"]])
def test_the_cli_says_it_in_one_line_and_writes_nothing(tmp_path, args):
    f = tmp_path / "runs.txt"
    f.write_text("mine\n")
    before = _tree(tmp_path)
    res = _cli(tmp_path, *args, runs=f)
    _one_error_line(res, f"paths.runs: {f} is a file, not the runs folder")
    assert _tree(tmp_path) == before


def test_generate_out_and_export_naming_a_file(tmp_path):
    f = tmp_path / "taken.wav"
    f.write_bytes(b"RIFF")
    before = _tree(tmp_path)
    res = _cli(tmp_path, "generate", "--out", str(f), str(tmp_path / "clip.mp4"))
    _one_error_line(res, f"{f} is a file, not the output folder (--out)")
    res = _cli(tmp_path, "generate", "--out", str(f / "sub"), str(tmp_path / "clip.mp4"))
    _one_error_line(res, f"{f} is a file, so {f / 'sub'} cannot be the output folder (--out)")
    res = _cli(tmp_path, "export", str(f))
    _one_error_line(res, f"{f} is a file, not the pipeline folder to export to")
    assert _tree(tmp_path) == before


def test_export_refuses_a_folder_of_other_files(tmp_path):
    from infer.export import check_not_foreign

    mine = tmp_path / "Documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match=r"Documents already holds files that are not a pipeline folder's \(thesis"):
        check_not_foreign(mine)
    earlier = tmp_path / "export"
    (earlier / "mapper").mkdir(parents=True)
    for name in ("encoders.json", "README.md", ".model_index.json.x.tmp"):  # an export stopped half-way
        (earlier / name).write_text("{}")
    check_not_foreign(earlier)


def test_the_preflight_names_an_unwritable_output_folder(tmp_path, monkeypatch):
    cfg = load_config(BASE, _sets(tmp_path))
    ro = tmp_path
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != ro)
    rows = {(p.stage, p.item): p.problem for p in check_output_folders(cfg, cfg.stage("train"))}
    assert rows == {("train", "paths.runs"): f"{ro} is not writable by this user, so {ro / 'runs'} cannot be the "
                                             "runs folder"}
    assert [p.item for p in check_output_folders(cfg, cfg.stage("cavp"))] == ["paths.cache"]
    assert [p.item for p in check_output_folders(cfg, cfg.stage("evaluate"))] == ["paths.outputs"]
    assert [p.item for p in check_output_folders(cfg, cfg.stage("dynamics"))] == ["paths.runs"]
    assert any(p.item == "paths.runs" for p in preflight(cfg, ["train"]))
