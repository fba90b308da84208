"""Stage ``audiomae``: run the frozen audiomae encoder (frozen/audiomae.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, encoder_preflight, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

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


def __getattr__(name: str):
    if name == "encoder":  # the frozen module, as this module's ``encoder`` before it was imported lazily
        return _encoder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, _encoder())


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Problems found before the stage starts (no weights loaded): see frozen/audiomae.py ``preflight``."""
    return encoder_preflight(ctx, _encoder())
