"""A tiny, untrained pipeline folder from the installed package alone: ``python -m lab.tiny_pipeline OUT``.

It holds a seeded random mapper for the demo's tiny encoders (packaged ``stages.yaml`` + ``demo.yaml``: CAVP and
TimeChat ``model: tiny``) and the tiny seeded AudioLDM-2, in the ``v2a export`` layout (``infer.hub``), so that
``v2a generate --mapper OUT clip.mp4`` runs end to end in seconds on a CPU with no repository, no cache, no
training and no download: the install check (``.ci/install_check.sh``) uses it. Its sound is noise: the mapper
was never trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The tiny encoders' and tiny AudioLDM-2's sizes for 10 s windows at the demo's 4 fps (what `v2a run train` reads
# from the cache): CAVP (40, 32), TimeChat (10, 32, 32) with stride 4, 8 AudioMAE tokens of 32 = gpt_dim.
TINY_DIMS = {"cavp_steps": 40, "cavp_dim": 32, "timechat_windows": 10, "timechat_queries": 32, "timechat_dim": 32,
             "n_tokens": 8, "timechat_stride": 4, "target_dim": 32}
TINY_AUDIOLDM2 = {"model": "tiny", "seed": 0, "gpt_dim": 32, "t5_dim": 16}


def tiny_parts(steps: int = 2, seed: int = 0) -> dict:
    """The keyword arguments of ``infer.pipeline.save_folder`` (mapper, encoders, model_params, settings,
    training) for an untrained tiny mapper seeded with ``seed``."""
    from infer.export import configured_encoders
    from infer.params import GenerationSettings
    from trainer.config import TrainConfig
    from trainer.mapper import build_mapper
    from v2a.config import load_config
    from v2a.defaults import packaged

    cfg = load_config([packaged("stages.yaml"), packaged("demo.yaml")])
    mapper = build_mapper(TrainConfig(model="tiny", seed=seed), TINY_DIMS)
    return {"mapper": mapper, "encoders": configured_encoders(cfg, ["cavp", "timechat"]),
            "model_params": dict(TINY_AUDIOLDM2), "settings": GenerationSettings(steps=steps),
            "training": {"checkpoint": "untrained", "seed": seed}}


def write_tiny_pipeline(out: str | Path, steps: int = 2, seed: int = 0) -> Path:
    """Write the tiny pipeline folder to ``out`` (every file atomically, ``model_index.json`` last)."""
    from infer.pipeline import save_folder

    return save_folder(out, **tiny_parts(steps, seed))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.tiny_pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write")
    ap.add_argument("--steps", type=int, default=2, help="its default DDIM steps (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="the mapper's seed (default 0)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps {args.steps}: need at least 1 denoising step")
    folder = write_tiny_pipeline(args.out, args.steps, args.seed)
    print(f"wrote a tiny untrained pipeline to {folder} (v2a generate --mapper {folder} VIDEO...)")


if __name__ == "__main__":
    main()
