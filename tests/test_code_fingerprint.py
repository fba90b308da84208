"""Stage code identity from imports (v2a/code.py): what a stage imports, transitively, and nothing else."""

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from v2a.code import code_identity, imported_names, module_files
from v2a.config import load_config
from v2a.runner import Runner


def test_imported_names_reads_every_form_and_skips_type_checking():
    src = textwrap.dedent("""
        import a.b, c
        from d import e
        from . import f
        from .g import h
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from nope import x
        else:
            import fallback
        def later():
            from lazy.mod import thing
    """)
    names = imported_names(src, "pkg.mod", is_package=False)
    assert {"a.b", "c", "d", "d.e", "pkg", "pkg.f", "pkg.g", "pkg.g.h", "lazy.mod", "lazy.mod.thing",
            "fallback"} <= names
    assert not any(n.startswith("nope") for n in names)
    assert "pkg.sub" in imported_names("from .sub import y", "pkg", is_package=True)


@pytest.mark.parametrize("stage,must", [
    # the files the hand-kept lists used to miss
    ("scoring.stage", ["frozen/imagebind.py", "frozen/synchformer.py", "frozen/audio.py", "scoring/desync.py",
                       "scoring/ib_score.py", "frozen/weights.py", "scoring/params.py", "scoring/run.py",
                       "scoring/embedders.py", "pipeline/cache.py"]),
    ("pipeline.cavp", ["frozen/cavp.py", "frozen/weights.py", "pipeline/encode.py", "pipeline/framestore.py",
                       "frozen/names.py", "pipeline/cache.py"]),
    ("pipeline.timechat", ["frozen/timechat.py", "frozen/eva_vit.py", "frozen/qformer.py", "frozen/weights.py",
                           "frozen/blocks.py", "frozen/names.py"]),
    ("pipeline.audiomae", ["frozen/audiomae.py", "frozen/audio.py", "frozen/weights.py", "frozen/blocks.py",
                           "frozen/names.py"]),
    ("pipeline.clip", ["frozen/clip.py", "frozen/names.py", "pipeline/encode.py"]),
    ("pipeline.clap", ["frozen/clap.py", "frozen/names.py", "pipeline/encode.py"]),
    ("trainer.stage", ["trainer/train.py", "trainer/mapper.py", "trainer/data.py"]),
    ("infer.stage", ["infer/params.py", "infer/generate.py", "infer/audioldm2.py", "infer/audioldm.py",
                     "trainer/mapper.py", "pipeline/cache.py"]),
])
def test_real_stages_cover_what_they_import(stage, must):
    # imports inside functions count: the stage modules import torch, zarr and the frozen networks lazily
    # (tests/test_light_imports.py), their files stay part of the fingerprint
    files = module_files(stage)
    assert set(must) <= set(files), sorted(set(must) - set(files))
    assert "lab/cli.py" not in files and "v2a/runner.py" not in files  # the runner is an annotation only
    assert all(not f.startswith(("torch/", "transformers/", "numpy/")) for f in files)


def test_encoder_stages_do_not_depend_on_each_other():
    assert "frozen/timechat.py" not in module_files("pipeline.cavp")
    assert "frozen/cavp.py" not in module_files("pipeline.audiomae")


PKG = {
    "__init__.py": "",
    "helper.py": "VALUE = 1\n",
    "deep.py": "from toypkg.helper import VALUE\n",
    "unrelated.py": "X = 2\n",
    "stage_a.py": textwrap.dedent("""
        import json
        from toypkg import deep

        def read_record(ctx):
            p = ctx.cfg.cache_dir / f"{ctx.name}.json"
            return json.loads(p.read_text()) if p.exists() else None

        def run(ctx):
            ctx.cfg.cache_dir.mkdir(parents=True, exist_ok=True)
            (ctx.cfg.cache_dir / f"{ctx.name}.json").write_text(json.dumps(ctx.record()))
    """),
    "stage_b.py": "from toypkg.stage_a import read_record, run\n",
}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    code = tmp_path / "code" / "toypkg"
    code.mkdir(parents=True)
    for name, text in PKG.items():
        (code / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield tmp_path, code
    for m in [m for m in sys.modules if m.startswith("toypkg")]:
        del sys.modules[m]


def _runner(root: Path) -> Runner:
    cfg = {"paths": {"cache": "cache"}, "stages": {
        "a": {"module": "toypkg.stage_a", "params": {}},
        "b": {"module": "toypkg.stage_b", "needs": ["a"], "params": {}}}}
    (root / "stages.yaml").write_text(yaml.safe_dump(cfg))
    return Runner(load_config([root / "stages.yaml"]))


def test_editing_an_imported_file_makes_the_stage_and_dependants_stale(toy):
    root, code = toy
    assert set(code_identity("toypkg.stage_a")) == {"toypkg/__init__.py", "toypkg/deep.py", "toypkg/helper.py",
                                                    "toypkg/stage_a.py"}
    assert _runner(root).run(["b"]) == ["a", "b"]
    (code / "unrelated.py").write_text("X = 3\n")  # imported by nothing
    r = _runner(root)
    assert r.status("a") == (True, []) and r.status("b") == (True, [])
    (code / "helper.py").write_text("VALUE = 2\n")  # imported two levels down
    r = _runner(root)
    assert r.status("a") == (False, ["code changed (toypkg/helper.py)"])
    fresh, why = r.status("b")
    assert not fresh and "input a changed" in why and "code changed (toypkg/helper.py)" in why
    assert r.run(["b"]) == ["a", "b"]
    assert _runner(root).run(["b"]) == []
