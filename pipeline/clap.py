"""Stage ``clap``: run the frozen CLAP audio encoder (frozen/clap.py) over the frames stage's audio into the cache:
V2A-Mapper's target."""

from __future__ import annotations

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

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


_stage = EncoderStage(_encoder, __name__)
run, __getattr__ = _stage.run, _stage.module_getattr  # no preflight: nothing to check
