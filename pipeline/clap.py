"""Stage ``clap``: run the frozen CLAP audio encoder (frozen/clap.py) over the frames stage's audio into the cache:
V2A-Mapper's target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frozen import clap as encoder
from pipeline.encode import EncoderParams, EncoderRuntime, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

__all__ = ["run", "read_record", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.clap.params``."""

    checkpoint: str | None = encoder.DEFAULT_CHECKPOINT  # full: hub id or save_pretrained folder (ClapModel)
    normalize: bool = True  # L2-normalise the audio embedding


Runtime = EncoderRuntime


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, encoder)
