"""benchmarks/gpu_check.py in its reduced CPU mode, so that the GPU check cannot rot before a GPU is lent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reduced_mode_runs_every_section(gpu_check, capsys):
    assert gpu_check.main(["--reduced", "--device", "cpu", "--compile-modes", "off"]) == 0
    out = capsys.readouterr().out
    for name in ("cavp", "timechat", "audiomae"):
        assert f"  {name}" in out and "clips/s" in out
    assert "mapper compile=off" in out and "steps/s" in out and "40 ep x 77k clips" in out
    assert "ours" in out and "direct AudioLDM2Pipeline" in out and "s/clip" in out
    assert out.rstrip().endswith("all sections ran")


def test_a_failing_section_is_reported_and_the_rest_runs(gpu_check, capsys, monkeypatch):
    ran = []

    def broken(*a):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setitem(gpu_check.SECTIONS, "encoders", broken)
    monkeypatch.setitem(gpu_check.SECTIONS, "mapper", lambda *a: ran.append("mapper"))
    assert gpu_check.main(["--reduced", "--device", "cpu", "--sections", "encoders,mapper"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: RuntimeError: CUDA error: out of memory" in out and ran == ["mapper"]
    assert "FAILED sections ['encoders']" in out


def test_full_sizes_refused_on_cpu(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "--reduced" in capsys.readouterr().err
