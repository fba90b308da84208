"""The package installed outside its checkout (the whole wheel round trip is .ci/install_check.sh): what it ships,
and a stage's code identity when its folder is site-packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from e2e_project import REPO
from v2a.code import PACKAGES, code_identity

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_packages_are_those_pyproject_ships():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in include} == PACKAGES
    assert all((REPO / p / "__init__.py").is_file() for p in PACKAGES)


def test_package_data_covers_the_files_read_at_run_time():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    shipped = {str(f.relative_to(REPO)) for pkg, globs in data.items() for g in globs for f in (REPO / pkg).glob(g)
               if f.is_file()}
    want = {"v2a/weights.yaml", "v2a/configs/stages.yaml", "v2a/configs/demo.yaml"}
    want |= {str(f.relative_to(REPO)) for f in (REPO / "infer" / "data").glob("*") if f.is_file()}
    assert want <= shipped
    for name in ("stages.yaml", "demo.yaml"):  # links to the repository's files: the wheel stores their content
        assert (REPO / "v2a" / "configs" / name).read_bytes() == \
            (REPO / {"stages.yaml": "stages.yaml", "demo.yaml": "configs/demo.yaml"}[name]).read_bytes()


def test_the_torch_range_admits_the_tested_release():
    import torch

    (spec,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert spec == "torch>=2.6,<3"
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert (2, 6) <= (major, minor) < (3, 0)
    assert "TORCH ?= torch==2.13.0" in (REPO / "Makefile").read_text()  # what CI installs, and tests


def test_an_installed_stage_counts_only_the_project_files(tmp_path):
    """Installed, the project's packages sit in site-packages beside third-party ones (here a stand-in ``yaml``
    and ``numpy``): the identity still holds only project files, the same as in the checkout."""
    site = tmp_path / "site-packages"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for third in ("yaml", "numpy"):
        (site / third).mkdir()
        (site / third / "__init__.py").write_text("import os\nfrom . import core\n")
        (site / third / "core.py").write_text("X = 1\n")
    code = ("import json, v2a.code as c; "
            "print(json.dumps([str(c.REPO_ROOT), c.code_identity('pipeline.frames'), c.code_identity('trainer.train')]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    root, frames, train = json.loads(out)
    assert Path(root) == site
    assert frames == code_identity("pipeline.frames") and train == code_identity("trainer.train")
    assert not any(k.startswith(("yaml/", "numpy/")) for k in [*frames, *train])
    assert any("import numpy" in (REPO / k).read_text() for k in frames)  # imported, and not followed
