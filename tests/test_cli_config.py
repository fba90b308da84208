"""`v2a` from any folder: the packaged default configuration (package data) and `-c demo`."""

from pathlib import Path

from typer.testing import CliRunner

from lab.cli import app
from v2a.config import load_config
from v2a.defaults import PACKAGED, choose_config

REPO = Path(__file__).resolve().parent.parent


def test_packaged_configs_are_the_repository_ones():
    assert (PACKAGED / "stages.yaml").read_bytes() == (REPO / "stages.yaml").read_bytes()
    assert (PACKAGED / "demo.yaml").read_bytes() == (REPO / "configs" / "demo.yaml").read_bytes()


def test_without_stages_yaml_the_packaged_one_is_used_with_paths_here(tmp_path):
    choice = choose_config([], cwd=tmp_path)
    assert choice.files == [PACKAGED / "stages.yaml"] and not choice.configured
    cfg = load_config(choice.files, root=choice.root)
    assert cfg.path("cache") == tmp_path.resolve() / "cache" and cfg.path("runs") == tmp_path.resolve() / "runs"
    (tmp_path / "stages.yaml").write_text((REPO / "stages.yaml").read_text())
    local = choose_config([], cwd=tmp_path)
    assert local.files == [tmp_path / "stages.yaml"] and local.configured and local.root is None


def test_c_demo_names_the_packaged_overlay_on_the_base(tmp_path):
    (tmp_path / "demo").mkdir()  # `make demo`'s output folder: not a config file
    choice = choose_config(["demo"], cwd=tmp_path)
    assert choice.files == [PACKAGED / "stages.yaml", PACKAGED / "demo.yaml"] and choice.configured
    cfg = load_config(choice.files, root=choice.root)
    assert cfg.stage("cavp").params["model"] == "tiny" and cfg.path("cache") == tmp_path.resolve() / "demo" / "cache"
    mine = tmp_path / "mine.yaml"
    mine.write_text("paths: {cache: elsewhere}\n")
    assert choose_config(["stages", str(mine)], cwd=tmp_path).files == [PACKAGED / "stages.yaml", mine]


def test_v2a_runs_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["-c", "demo", "status"])
    assert [ln.split()[:2] for ln in res.output.splitlines()][:2] == [["frames", "stale"], ["cavp", "stale"]]
    assert "never run" in res.output
    # the packaged demo overlay, its paths resolved here: the inputs it names are missing, and said so
    assert res.exit_code == 1 and f"paths.videos: {tmp_path.resolve() / 'demo' / 'videos'} does not exist" in res.output


def test_status_shows_stages_the_chain_never_uses_as_not_used(tmp_path, monkeypatch):
    """V2A-Mapper's chain (clip -> clap -> train ...) never uses cavp/timechat/audiomae: `not used`, and their missing
    weights are not problems of this run; the MFM-Mapper chain never uses clip/clap."""
    monkeypatch.chdir(tmp_path)
    base = ["-c", str(REPO / "stages.yaml")]
    res = CliRunner().invoke(app, base + ["-c", str(REPO / "configs" / "v2a-mapper.yaml"), "status"])
    rows = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines() if not ln.startswith("problem")}
    assert {n for n, r in rows.items() if r[:2] == ["not", "used"]} == {"cavp", "timechat", "audiomae", "dynamics"}
    assert rows["cavp"][2:] == ["-", "evaluate", "does", "not", "need", "it"]
    problems = [ln for ln in res.output.splitlines() if ln.startswith("problem: ")]
    assert any(p.startswith("problem: clip: ") for p in problems)  # the full run's weights are not here
    assert not any(p.startswith(f"problem: {n}: ") for p in problems for n in ("cavp", "timechat", "audiomae"))
    res = CliRunner().invoke(app, base + ["status"])
    rows = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines() if not ln.startswith("problem")}
    assert {n for n, r in rows.items() if r[:2] == ["not", "used"]} == {"clip", "clap", "dynamics"}  # Fig. 3: asked
    assert not any(ln.startswith(("problem: clip: ", "problem: clap: ")) for ln in res.output.splitlines())
    assert any(ln.startswith("problem: cavp: ") for ln in res.output.splitlines())
