"""Named experiments: presets resolve to isolated runs/outputs over the shared cache; reruns reuse; the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from safetensors.torch import load_file

from pipeline.demo_data import make_demo_clips
from v2a.config import load_config
from lab.experiments import ablations, distinct, experiment_config, experiment_overrides, presets, run_experiment
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent
FILES = [REPO / "stages.yaml", REPO / "configs" / "demo.yaml"]


def sets(root: Path) -> list[str]:
    return [f"paths.videos={root / 'videos'}", f"paths.labels={root / 'videos' / 'labels.csv'}",
            f"paths.cache={root / 'cache'}", f"paths.runs={root / 'runs'}", f"paths.outputs={root / 'out'}",
            "stages.frames.params.shard_size=4", "stages.train.params.global_batch=2",
            "experiments.epochs_scale=0.05",  # the presets' 40 epochs -> 2
            "stages.evaluate.params.imagebind_ckpt=null", "stages.evaluate.params.synchformer_ckpt=null"]


def test_every_paper_row_has_a_preset():
    from scoring.report import PAPER_TABLES
    from lab.experiments import read_preset

    known = presets(FILES)
    rows = {(r["table"], r["row"]) for n in known for r in read_preset(n, known).paper}
    assert rows == {(t, r) for t, tab in PAPER_TABLES.items() for r in tab["rows"]}
    assert sorted(distinct(FILES)) == sorted(["mfm-mapper", "mfm-mapper-m", "cavp-only", "timechat-only", "fusion-add",
                                              "fusion-cat", "diff-mapper", "v2a-mapper"])  # aliases are mfm-mapper
    for n in known:  # every preset is a valid train config
        from trainer.config import TrainConfig

        TrainConfig.from_dict(experiment_config(FILES, [], n)[0].stage("train").params)


def test_overrides_move_runs_and_outputs_only(tmp_path):
    base = load_config(FILES, sets(tmp_path))
    cfg, pre = experiment_config(FILES, sets(tmp_path), "fusion-concat")
    assert pre.name == "mfm-mapper" and cfg.experiment == "mfm-mapper"
    assert cfg.path("runs") == tmp_path / "runs" / "mfm-mapper" and cfg.path("outputs") == tmp_path / "out" / "mfm-mapper"
    assert cfg.cache_dir == base.cache_dir
    assert cfg.stage("train").params["epochs"] == 2 and cfg.stage("generate").params["steps"] == 2  # demo overlay
    other, _ = experiment_config(FILES, sets(tmp_path), "cavp-only")
    r0, r1, r2 = Runner(base), Runner(cfg), Runner(other)
    for stage in ("frames", "cavp", "timechat", "audiomae"):  # the feature cache is shared
        assert r0.fingerprint(stage).value == r1.fingerprint(stage).value == r2.fingerprint(stage).value
    assert len({r.fingerprint("train").value for r in (r0, r1, r2)}) == 3
    sets_, _ = experiment_overrides(FILES, sets(tmp_path), "mfm-mapper-m")
    assert "stages.train.params.epochs=5" in sets_  # 100 x 0.05
    mine, _ = experiment_config(FILES, sets(tmp_path) + ["stages.train.params.epochs=7"], "cavp-only")
    assert mine.stage("train").params["epochs"] == 7  # --set wins over the preset
    with pytest.raises(ValueError, match="unknown experiment 'nope'; presets: cavp-only"):
        experiment_config(FILES, [], "nope")
    with pytest.raises(ValueError, match="experiment name"):
        experiment_config(FILES, [], "../x")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    make_demo_clips(root / "videos", n=7, seed=11)
    ran = run_experiment(FILES, sets(root), "cavp-only", ["evaluate"], progress=False)
    assert ran == ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
    cache_state = {p.name: p.stat().st_mtime_ns for p in (root / "cache" / "frames").iterdir()}
    ran = run_experiment(FILES, sets(root), "mfm-mapper", ["evaluate"], progress=False)
    assert ran == ["train", "generate", "evaluate"]  # the cache is reused, not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (root / "cache" / "frames").iterdir()} == cache_state
    return root


def test_experiments_are_isolated(project):
    root = project
    assert not (root / "runs" / "mapper").exists() and not (root / "out" / "generated").exists()
    specs = {n: json.loads((root / "runs" / n / "mapper" / "best" / "mapper.json").read_text())
             for n in ("cavp-only", "mfm-mapper")}
    assert specs["cavp-only"]["encoders"] == "cavp" and specs["mfm-mapper"]["encoders"] == "both"
    wavs = {n: sorted((root / "out" / n / "generated").glob("*.wav")) for n in specs}
    assert [p.name for p in wavs["cavp-only"]] == [p.name for p in wavs["mfm-mapper"]] != []
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(wavs["cavp-only"], wavs["mfm-mapper"]))
    for n in specs:
        m = json.loads((root / "out" / n / "evaluation" / "metrics.json").read_text())
        assert m["experiment"] == n and m["complete"]
        assert f"| {n} (this run" in (root / "out" / n / "evaluation" / "table.md").read_text()
        assert json.loads((root / "out" / n / "experiment.json").read_text())["experiment"] == n


def test_a_finished_experiment_is_reused(project):
    root = project
    files = [root / "out" / "cavp-only" / "evaluation" / "metrics.json",
             root / "runs" / "cavp-only" / "mapper" / "best" / "manifest.json",
             *(root / "out" / "cavp-only" / "generated").glob("*.wav")]
    before = [p.stat().st_mtime_ns for p in files]
    assert run_experiment(FILES, sets(root), "cavp-only", ["evaluate"], progress=False) == []
    assert [p.stat().st_mtime_ns for p in files] == before


def test_combined_report_scale_and_params_from_the_run(project):
    root = project
    res = ablations(FILES, sets(root), ["cavp-only", "mfm-mapper"], run=False)
    report = Path(res["files"]["report"]).read_text()
    assert report.count("(ours)") == 2 and "paper, Table 2: CAVP" in report and "| 123.26 |" in report
    assert "paper, Table 1: MFM-Mapper" in report and "8,000h" in report and "124M" in report
    rows = {r["experiment"]: r for r in csv.DictReader(open(res["files"]["csv"]))}
    z = zarr.open_group(str(root / "cache" / "features.zarr"), mode="r")
    ids = [str(i) for i in z["meta/id"][:]]
    audio_len = np.asarray(z["meta/audio_len"][:])
    for n in ("cavp-only", "mfm-mapper"):
        run = root / "runs" / n / "mapper"
        train_ids = (run / "train_ids.txt").read_text().split()
        hours = sum(audio_len[ids.index(i)] for i in train_ids) / 16000 / 3600
        assert float(rows[n]["scale_hours"]) == pytest.approx(hours * 2)  # 2 epochs
        weights = load_file(str(next((run / "best").glob("model-*.safetensors"))))
        trainable = sum(v.numel() for k, v in weights.items() if not k.startswith("gpt2.wte"))  # wte is frozen
        assert int(rows[n]["trainable_params"]) == trainable
        assert rows[n]["status"] == "done" and rows[n]["fd_passt_clips"].endswith("gt")


def test_training_dynamics_points_and_unchanged_training(project, tmp_path):
    root = project
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "dyn.yaml").write_text("experiment: {description: mfm-mapper with dynamics}\n"
                                     "stages: {train: {params: {encoders: both, fusion: concat, epochs: 40, "
                                     "save_every: 1}}, dynamics: {params: {clips: 2}}}\n")
    over = sets(root) + [f"experiments.presets={folder}"]
    assert run_experiment(FILES, over, "dyn", ["dynamics"], progress=False) == ["train", "dynamics"]
    run = root / "runs" / "dyn" / "mapper"
    rows = list(csv.DictReader(open(run / "dynamics" / "dynamics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["ib_score"] == "" for r in rows)  # IB off in this test
    assert (run / "dynamics" / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = (run / "val_ids.txt").read_text().split()  # this small demo holds 1 validation clip: FD is skipped
    for e in (1, 2):
        point = run / "dynamics" / f"epoch-{e:04d}"
        assert sorted(p.stem for p in point.glob("*.wav")) == sorted(val)[:2]  # the listening samples
        m = json.loads((point / "metrics.json").read_text())
        assert m["epoch"] == e and m["counts"]["clips"] == len(val[:2]) and m["metrics"]["kl_passt"]["status"] == "ok"
    res = ablations(FILES, over, ["dyn"], run=False)
    assert "## Training dynamics" in Path(res["files"]["report"]).read_text()
    assert Path(res["files"]["dynamics"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # keeping per-epoch weights does not change the training: the same weights as mfm-mapper (same params otherwise)
    a = load_file(str(next((run / "last").glob("model-*.safetensors"))))
    b = load_file(str(next((root / "runs" / "mfm-mapper" / "mapper" / "last").glob("model-*.safetensors"))))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_switching_back_brings_the_kept_run_back(project):
    root = project
    run = root / "runs" / "cavp-only" / "mapper"
    weights = next((run / "last").glob("model-*.safetensors"))
    before = weights.read_bytes()
    other = sets(root) + ["stages.train.params.lr=0.002"]
    assert run_experiment(FILES, other, "cavp-only", ["train"], progress=False) == ["train"]
    kept = [p.name for p in run.parent.iterdir() if p.name.startswith("mapper.")]
    assert len(kept) == 1 and next((run / "last").glob("model-*.safetensors")).read_bytes() != before
    assert run_experiment(FILES, sets(root), "cavp-only", ["evaluate"], progress=False) == ["train"]  # no retraining
    assert next((run / "last").glob("model-*.safetensors")).read_bytes() == before
    assert Runner(experiment_config(FILES, sets(root), "cavp-only")[0]).status("evaluate") == (True, [])


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_cli_run_of_a_finished_experiment_reuses_it_and_lookups_write_nothing(project):
    """`make demo-mappers` (v2a run evaluate --experiment NAME) after `make demo-ablations` (run_experiment): the same
    experiment with the same settings is the same folder and fingerprints: nothing is recomputed or rewritten;
    `v2a status --experiment` and `v2a experiments` write nothing."""
    from typer.testing import CliRunner

    from lab.cli import app

    root = project
    args = [a for f in FILES for a in ("-c", str(f))] + [a for s in sets(root) for a in ("--set", s)]
    runs, outs = root / "runs" / "cavp-only", root / "out" / "cavp-only"
    before = {**_mtimes(runs), **_mtimes(outs)}
    res = CliRunner().invoke(app, args + ["status", "--experiment", "cavp-only"])
    lines = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines() if not ln.startswith("problem")}
    assert res.exit_code == 0, res.output
    assert lines["clip"][:2] == lines["clap"][:2] == ["not", "used"]
    assert all(lines[n][0] == "fresh" for n in ("frames", "cavp", "timechat", "audiomae", "train", "generate",
                                                   "evaluate"))
    res = CliRunner().invoke(app, args + ["experiments"])
    listed = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines()}
    assert res.exit_code == 0 and listed["cavp-only"][0] == "done" and listed["mfm-mapper"][0] == "done"
    assert listed["fusion-add"][:2] == ["not", "run"] and listed["fusion-concat"] == ["=", "mfm-mapper"]
    assert {**_mtimes(runs), **_mtimes(outs)} == before  # lookups write nothing
    res = CliRunner().invoke(app, args + ["run", "evaluate", "--experiment", "cavp-only"])
    assert res.exit_code == 0 and "ran: nothing (all up to date)" in res.output, res.output
    assert {**_mtimes(runs), **_mtimes(outs)} == before  # experiment.json too: it describes the same outputs
    # a plain run pointed at the experiment's folders (the old `make demo-mappers`) is refused: one line, exit 2
    res = CliRunner().invoke(app, args + ["--set", f"paths.runs={runs}", "--set", f"paths.outputs={outs}",
                                          "run", "train"])
    assert res.exit_code == 2 and res.output.strip() == (f"error: paths.runs {runs} is experiment cavp-only's folder: "
                                                         "run it as `--experiment cavp-only`, or set paths.runs to "
                                                         "another folder")
    assert {**_mtimes(runs), **_mtimes(outs)} == before
    rec = json.loads((outs / "experiment.json").read_text())
    cfg, _ = experiment_config(FILES, sets(root), "cavp-only")
    r = Runner(cfg)
    assert rec["experiment"] == "cavp-only" and rec["train_params"]["encoders"] == "cavp"
    assert rec["stages"] == {n: r.fingerprint(n).value for n in cfg.used_stages()}
    assert json.loads((runs / "experiment.json").read_text()) == rec


def test_a_folder_written_with_other_params_is_stale_not_the_preset(project):
    """Another command trains other params into an experiment's run folder (the old `make demo-mappers`): the
    experiment is not done, its stages below train are stale (`upstream train stale`), and the report shows the row
    as stale without the other run's numbers; running the experiment again brings its own run back."""
    root = project
    cfg, _ = experiment_config(FILES, sets(root), "cavp-only")
    preset_fp = Runner(cfg).fingerprint("train").value
    other = load_config(FILES, sets(root) + [f"paths.runs={root / 'runs' / 'cavp-only'}",
                                              f"paths.outputs={root / 'out' / 'cavp-only'}",
                                              "stages.train.params.encoders=cavp", "stages.train.params.epochs=1"])
    assert Runner(other).run(["train"], progress=False) == ["train"]  # not through the experiment
    r = Runner(cfg)
    assert r.own_status("generate") == (True, []) and r.own_status("evaluate") == (True, [])  # their own records
    assert r.status("train") == (False, ["params changed"])
    assert r.status("generate") == (False, ["upstream train stale"])
    assert r.status("evaluate") == (False, ["upstream generate stale"])
    res = ablations(FILES, sets(root), ["cavp-only", "mfm-mapper"], run=False)
    entries = {e["name"]: e for e in res["entries"]}
    assert entries["cavp-only"]["status"] == "stale (train: params changed)"
    assert entries["cavp-only"]["metrics"] is None and entries["cavp-only"]["train"] is None
    assert entries["mfm-mapper"]["status"] == "done" and entries["mfm-mapper"]["metrics"]["complete"]
    rows = {r["experiment"]: r for r in csv.DictReader(open(res["files"]["csv"]))}
    assert rows["cavp-only"]["status"] == "stale (train: params changed)" and rows["cavp-only"]["fd_passt"] == ""
    assert rows["cavp-only"]["epochs"] == "2" and rows["cavp-only"]["train_clips"] == ""  # not the 1-epoch run's
    assert "| **cavp-only** (ours) | stale (train: params changed) |" in Path(res["files"]["report"]).read_text()
    # the experiment again: its own run comes back (kept aside), generate and evaluate were never replaced
    assert run_experiment(FILES, sets(root), "cavp-only", ["evaluate"], progress=False) == ["train"]
    rec = json.loads((root / "out" / "cavp-only" / "experiment.json").read_text())
    assert rec["stages"]["train"] == preset_fp
    e = ablations(FILES, sets(root), ["cavp-only"], run=False)["entries"][0]
    assert e["status"] == "done" and e["metrics"]["fingerprint"] == Runner(cfg).fingerprint("evaluate").value
    assert e["identity"] == "ok"


def test_experiment_names_cannot_be_run_folders(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    for name in ("mapper", "evaluation", "mapper.1234", "evaluate-x"):
        (folder / f"{name}.yaml").write_text("experiment: {description: x}\n")
        with pytest.raises(ValueError, match="would lie in the plain run's folders"):
            experiment_config(FILES, [f"experiments.presets={folder}"], name)


def test_make_writes_runs_and_outputs_only_through_the_layout():
    """No Makefile command hand-builds a runs/outputs folder: the demo's extra mappers are experiments, so the
    same experiment with the same settings is the only thing that shares a folder with `make demo-ablations`."""
    make = (REPO / "Makefile").read_text()
    assert "paths.runs" not in make and "paths.outputs" not in make
    recipe = make.split("\ndemo-mappers:")[1].split("\n\n")[0]
    assert [ln.split("--experiment ")[1] for ln in recipe.splitlines() if "--experiment" in ln] == \
        ["mfm-mapper", "diff-mapper", "v2a-mapper"]
    assert all("$(DEMO) run evaluate" in ln for ln in recipe.splitlines() if "--experiment" in ln)
    assert "$(V2A) $(DEMO) ablations" in make.split("\ndemo-ablations:")[1].split("\n\n")[0]
