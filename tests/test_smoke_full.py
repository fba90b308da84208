"""`make smoke-full`'s script (benchmarks/smoke_full.py) with the tiny models: every stage in its own process,
its time and peak memory, the sizes read back through the project's loaders, every metric but IS computed; then
the empty splits on its project (generate, evaluate, train) as one-line errors. The full-size run stays out of the
suite (docs/full-size.md: ~10 minutes of an idle 2-core machine)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from v2a.config import load_config
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "smoke_full.py"
STAGES = ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
METRICS = {"fd_passt", "fd_panns", "fd_vgg", "kl_panns", "kl_passt", "is_panns", "ib_score", "desync"}

pytestmark = pytest.mark.slow


def smoke_module():
    spec = importlib.util.spec_from_file_location("smoke_full", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    return out, proc


def project_config(root: Path, *sets: str):
    files, paths = smoke_module().config_args(root, tiny=True)
    return load_config(files, [*paths, *sets])


def test_smoke_passes_with_every_stage_timed_and_measured(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "smoke-full passed"
    assert lines[0].startswith("machine: ") and "cores" in lines[0]
    rows = {m.group(1): tuple(float(m.group(k)) for k in (2, 3, 4))
            for m in (re.match(r"(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S+\.log$", ln) for ln in lines) if m}
    assert list(rows) == STAGES  # each stage ran, in order, in its own process (its own log)
    assert all(secs > 0 and cpu > 0 and 0 < gb < 24 for secs, cpu, gb in rows.values())
    assert all((out / f"{s}.log").read_text().rstrip().endswith(f"ran: {s}") for s in STAGES)
    assert not [ln for ln in lines if ln.startswith("!")]


def test_smoke_reads_back_sizes_audio_and_metrics(smoke):
    out, proc = smoke
    text = proc.stdout
    # the tiny encoders' sizes (configs/demo.yaml): CAVP (40, 32), TimeChat (10, 32, 32), AudioMAE (8, 32)
    assert "cavp/emb per clip (40, 32)" in text and "timechat/emb per clip (10, 32, 32)" in text
    assert "mapper last/ reads CAVP (40, 32), TimeChat (10, 32, 32), writes (8, 32)" in text
    assert "generated 2 clips (split 'test' holds 2)" in text
    assert text.count("163840 samples at 16000 Hz (10.24 s)") == 2
    metrics = json.loads((out / "outputs" / "evaluation" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == METRICS
    assert {k for k, m in metrics.items() if m["status"] != "ok"} == {"is_panns"}  # 2 clips < 10 IS splits
    assert metrics["fd_panns"]["n_gen"] == metrics["fd_panns"]["n_gt"] == 2
    assert metrics["desync"]["n_clips"] == metrics["ib_score"]["n_clips"] == 2


def test_check_metrics_tolerates_only_a_short_is(tmp_path):
    smoke_full = smoke_module()
    cfg = project_config(tmp_path)
    ok, skipped = {"status": "ok", "value": 1.0}, {"status": "skipped", "value": None, "reason": "few clips"}
    path = cfg.evaluation_dir / "metrics.json"
    path.parent.mkdir(parents=True)
    for metrics, n, bad in [({"fd_panns": ok, "is_panns": skipped}, 2, []),
                            ({"fd_panns": ok, "is_panns": skipped}, 10, ["is_panns"]),  # 10 clips: IS is due
                            ({"fd_panns": {"status": "failed", "value": None, "reason": "imaginary"}, "is_panns": ok},
                             2, ["fd_panns"]),
                            ({"desync": skipped, "is_panns": ok}, 12, ["desync"])]:
        path.write_text(json.dumps({"metrics": metrics}))
        lines = smoke_full.check_metrics(cfg, n)
        assert [ln.split(":")[0][2:] for ln in lines if ln.startswith("!")] == bad


def test_bad_splits_are_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--splits", "train,val", "--out", str(tmp_path / "x")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs at least one train and one test clip" in proc.stderr
    assert not (tmp_path / "x").exists()


def copied(smoke, tmp_path) -> Path:
    out, proc = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copytree(out, tmp_path / "p", symlinks=True)
    return tmp_path / "p"


def test_generate_on_an_empty_split_is_one_line(smoke, tmp_path):
    root = copied(smoke, tmp_path)
    files, paths = smoke_module().config_args(root, tiny=True)
    cli = [sys.executable, "-m", "lab.cli", "--no-progress"] + [a for f in files for a in ("-c", f)] \
        + [a for s in [*paths, "stages.generate.params.split=val"] for a in ("--set", s)]
    proc = subprocess.run(cli + ["stage", "generate"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and errors[0].endswith("the cache has no usable clips in split 'val' "
                                                   "(stages.generate.params.split); usable clips per split: "
                                                   "test 2, train 1")


def test_evaluate_of_no_generated_clips_is_an_error(smoke, tmp_path):
    root = copied(smoke, tmp_path)
    cfg = project_config(root)
    index = cfg.generated_dir / "index.csv"
    index.write_text(index.read_text().splitlines()[0] + "\n")  # the header only
    with pytest.raises(RuntimeError, match="lists no generated clips: nothing to evaluate"):
        Runner(cfg).run(["evaluate"], force=True, only=True, progress=False)


def test_train_on_an_empty_subset_is_an_error(smoke, tmp_path):
    root = copied(smoke, tmp_path)
    cfg = project_config(root, "stages.train.params.subset_fraction=0.4")
    with pytest.raises(ValueError, match=r"training subset is empty \(0 of 1 usable training rows.*subset_fraction"):
        Runner(cfg).run(["train"], only=True, progress=False)


def test_full_size_train_names_no_checkpoint():
    """The overlay's train stage (random GPT-2, `gpt2: ""`) loads no weights: its checkpoint identity is None, not
    a listing of the config root (which changed as soon as the smoke wrote a log, so generate found train stale)."""
    from v2a.context import checkpoint_identity, resolved_params

    cfg = load_config(smoke_module().config_args(REPO / "build" / "unused", tiny=False)[0])
    assert resolved_params(cfg.stage("train"), cfg, strict=False)["gpt2"] == ""
    assert checkpoint_identity(cfg.stage("train"), cfg) == {"gpt2": None}
    assert checkpoint_identity(cfg.stage("generate"), cfg) == {"checkpoint": None}


def test_resume_needs_a_run_to_resume(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--from", "train", "--out", str(tmp_path / "none")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds none: run from frames first" in proc.stderr
