"""The tiny end-to-end project shared by the end-to-end tests (one per session: `e2e_project` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.demo_data import make_demo_clips
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent
E2E = ("stages.frames.params.shard_size=4", "stages.train.params.epochs=3", "stages.train.params.global_batch=2",
       "stages.generate.params.steps=4")


def make_project(root: Path, demo_config) -> tuple[Path, dict]:
    """7 synthetic clips through every stage (tiny models); returns (root, {clip id: ClipSpec})."""
    specs = make_demo_clips(root / "videos", n=7, seed=11)
    ran = Runner(demo_config(root, *E2E)).run(["evaluate"], progress=False)
    assert ran == ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
    return root, {s.id: s for s in specs}
