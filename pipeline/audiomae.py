"""Stage ``audiomae``: run the frozen audiomae encoder (frozen/audiomae.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frozen import audiomae as encoder
from pipeline.encode import EncoderParams, EncoderRuntime, encoder_preflight, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

__all__ = ["run", "read_record", "preflight", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.audiomae.params``."""

    checkpoint: str | None = None  # full: hub id (haoheliu/audioldm2-full) or a local file; tiny: optional
    filename: str = encoder.HUB_FILENAME  # the file inside the hub repo
    revision: str | None = None  # hub revision
    prefix: str = encoder.FULL_PREFIX  # key prefix of the AudioMAE weights inside the checkpoint's state_dict
    feature_layers: list[int] | None = None  # override the pooled layers


Runtime = EncoderRuntime


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, encoder)


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Problems found before the stage starts (no weights loaded): see frozen/audiomae.py ``preflight``."""
    return encoder_preflight(ctx, encoder)
