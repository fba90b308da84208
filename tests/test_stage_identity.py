"""A stage's identity is the code that computes its outputs: editing generation or scoring (every file of infer/ and
scoring/) leaves ``train`` fresh; the mapper's code, the GPT-2 it starts from and an encoder's code do not.

The edits are made to a copy of the project's packages in the test's tmp_path; code identity is computed over that
copy (v2a/code.py's ``root``), the real files are never touched.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest

from e2e_project import E2E
from v2a.code import code_identity, module_files
from v2a.context import Stages

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("v2a", "frozen", "pipeline", "trainer", "infer", "scoring", "lab")


@pytest.fixture
def copy(tmp_path) -> Path:
    """The project's packages, copied (Python files only)."""
    dest = tmp_path / "code"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def append_comment(path: Path) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n# an unrelated edit\n")


def edit_package(root: Path, pkg: str) -> list[str]:
    """A comment appended to every file of ``pkg``; returns their paths relative to ``root``."""
    files = sorted(p for p in (root / pkg).rglob("*") if p.is_file())
    # .py files, and data files whose readers skip '#' lines (infer/data/vggsound_classes.txt)
    assert files and all(p.suffix in (".py", ".txt") for p in files), "a file would need another comment syntax"
    for p in files:
        append_comment(p)
    return [p.relative_to(root).as_posix() for p in files]


def test_train_identity_holds_only_what_trains():
    files = module_files("trainer.stage")
    assert not [f for f in files if f.startswith(("infer/", "scoring/", "lab/"))]
    assert "frozen/audioldm2.py" not in files  # AudioLDM-2's pipeline: generation's, not training's
    # downloading and proving weights is not computing: the stages resolve manifest names (v2a/manifest.py) only
    for stage in ("trainer.stage", "pipeline.cavp", "infer.stage", "scoring.stage"):
        assert not {"v2a/weights.py", "v2a/transfer.py", "v2a/weight_formats.py"} & set(module_files(stage)), stage
    assert {"trainer/mapper.py", "trainer/train.py", "frozen/gpt2.py"} <= set(files)
    # the Fig. 3 stage holds generation and scoring (it runs them): its identity, not train's
    dyn = module_files("lab.dynamics")
    assert {"infer/generate.py", "scoring/run.py", "frozen/audioldm2.py", "lab/dynamics.py"} <= set(dyn)


def test_code_identity_over_a_copy_equals_the_repository(copy):
    assert code_identity("trainer.stage", root=copy) == code_identity("trainer.stage")
    assert all(p.is_relative_to(copy) for p in module_files("trainer.stage", root=copy).values())


def _fingerprints(cfg, root: Path, monkeypatch) -> dict[str, str]:
    """Every stage's fingerprint with code identity read from ``root``."""
    monkeypatch.setattr("v2a.context.code_identity", partial(code_identity, root=root))
    stages = Stages(cfg)
    return {n: stages.fingerprint(n).value for n in cfg.order()}


def test_editing_infer_and_scoring_keeps_train_fresh(copy, tmp_path, demo_config, monkeypatch):
    cfg = demo_config(tmp_path / "project")
    before = _fingerprints(cfg, copy, monkeypatch)
    train_code = code_identity("trainer.stage", root=copy)
    edited = edit_package(copy, "infer") + edit_package(copy, "scoring")
    assert len(edited) >= 20
    after = _fingerprints(cfg, copy, monkeypatch)
    assert code_identity("trainer.stage", root=copy) == train_code
    # train and what it needs stay; generation, scoring and the Fig. 3 curve go stale (the edits were seen)
    assert {n for n in before if before[n] != after[n]} == {"generate", "evaluate", "dynamics"}


@pytest.mark.parametrize("edited,stale", [
    ("trainer/mapper.py", {"train", "generate", "evaluate", "dynamics"}),  # the mapper itself
    ("frozen/gpt2.py", {"train", "generate", "evaluate", "dynamics"}),  # the GPT-2 the mapper starts from
    ("frozen/cavp.py", {"cavp", "train", "generate", "evaluate", "dynamics"}),  # an encoder: train's input
])
def test_what_computes_the_mapper_makes_train_stale(copy, tmp_path, demo_config, monkeypatch, edited, stale):
    cfg = demo_config(tmp_path / "project")
    before = _fingerprints(cfg, copy, monkeypatch)
    append_comment(copy / edited)
    after = _fingerprints(cfg, copy, monkeypatch)
    assert {n for n in before if before[n] != after[n]} == stale
    fp = Stages(cfg).fingerprint("train")
    if edited.startswith("trainer/") or edited == "frozen/gpt2.py":
        assert fp.components["code"][edited] != code_identity("trainer.stage")[edited]
    else:
        assert edited not in fp.components["code"]  # not train's code: its input, the cavp stage's fingerprint


def test_runner_status_of_a_trained_project(e2e_project, copy, demo_config, monkeypatch):
    """The real runner on the tiny end-to-end project (read only): its train record against code read from the
    copy, before and after the edits."""
    root, _ = e2e_project
    monkeypatch.setattr("v2a.context.code_identity", partial(code_identity, root=copy))
    from v2a.runner import Runner

    runner = lambda: Runner(demo_config(root, *E2E))  # noqa: E731 (a new runner reads the files anew)
    assert runner().status("train") == (True, []) and runner().status("evaluate") == (True, [])
    edit_package(copy, "infer")
    edit_package(copy, "scoring")
    r = runner()
    assert r.status("train") == (True, [])
    fresh, why = r.status("evaluate")
    assert not fresh and why[0].startswith("code changed (")
    append_comment(copy / "frozen" / "gpt2.py")
    assert runner().status("train") == (False, ["code changed (frozen/gpt2.py)"])
