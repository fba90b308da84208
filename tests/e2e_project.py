"""The tiny end-to-end project shared by the end-to-end tests (one per session: `e2e_project` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.demo_data import make_demo_clips
from v2a.config import load_config
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


def tiny_pipeline(steps: int = 2):
    """An untrained pipeline of the demo's tiny classes (seeded mapper, encoders and AudioLDM-2), built in seconds."""
    from infer.audioldm2 import build_pipeline
    from infer.export import configured_encoders
    from infer.params import GenerationSettings
    from infer.pipeline import MFMMapperPipeline
    from trainer.config import TrainConfig
    from trainer.mapper import build_mapper

    cfg = load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"])
    dims = {"cavp_steps": 40, "cavp_dim": 32, "timechat_windows": 10, "timechat_queries": 32, "timechat_dim": 32,
            "n_tokens": 8, "timechat_stride": 4, "target_dim": 32}  # the tiny encoders' and AudioLDM-2's sizes
    mapper = build_mapper(TrainConfig(model="tiny"), dims)
    audioldm2 = {"model": "tiny", "seed": 0, "gpt_dim": 32, "t5_dim": 16}
    return MFMMapperPipeline(mapper, build_pipeline(audioldm2), encoders=configured_encoders(cfg, ["cavp", "timechat"]),
                             model_params=audioldm2, settings=GenerationSettings(steps=steps))
