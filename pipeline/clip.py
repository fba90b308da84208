"""Stage ``clip``: run the frozen CLIP image encoder (frozen/clip.py) over the frames stage's shards into the cache:
V2A-Mapper's source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

__all__ = ["run", "read_record", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.clip.params``."""

    checkpoint: str | None = names.CLIP_DEFAULT_CHECKPOINT  # full: hub id or save_pretrained folder (CLIP vision)
    normalize: bool = True  # L2-normalise each frame's embedding
    frame_batch: Annotated[int, Field(ge=1)] = 80  # frames per forward pass


Runtime = EncoderRuntime


def _encoder():
    """frozen/clip.py, imported when the stage runs, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import clip

    return clip


def __getattr__(name: str):
    if name == "encoder":  # the frozen module, as this module's ``encoder`` before it was imported lazily
        return _encoder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, _encoder())
