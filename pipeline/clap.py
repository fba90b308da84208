"""Stage ``clap``: run the frozen CLAP audio encoder (frozen/clap.py) over the frames stage's audio into the cache:
V2A-Mapper's target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

__all__ = ["run", "read_record", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.clap.params``."""

    checkpoint: str | None = names.CLAP_DEFAULT_CHECKPOINT  # full: hub id or save_pretrained folder (ClapModel)
    normalize: bool = True  # L2-normalise the audio embedding


Runtime = EncoderRuntime


def _encoder():
    """frozen/clap.py, imported when the stage runs, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import clap

    return clap


def __getattr__(name: str):
    if name == "encoder":  # the frozen module, as this module's ``encoder`` before it was imported lazily
        return _encoder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, _encoder())
