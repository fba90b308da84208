"""Stage ``audiomae``: run the frozen audiomae encoder (frozen/audiomae.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

__all__ = ["run", "read_record", "preflight", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.audiomae.params``."""

    checkpoint: str | None = None  # full: hub id (haoheliu/audioldm2-full) or a local file; tiny: optional
    filename: str = names.AUDIOMAE_HUB_FILENAME  # the file inside the hub repo
    revision: str | None = None  # hub revision
    prefix: str = names.AUDIOMAE_FULL_PREFIX  # key prefix of the AudioMAE weights inside the checkpoint's state_dict
    feature_layers: list[int] | None = None  # override the pooled layers


Runtime = EncoderRuntime


def _encoder():
    """frozen/audiomae.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import audiomae

    return audiomae


_stage = EncoderStage(_encoder, __name__)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
