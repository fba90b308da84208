"""Stage ``clip``: run the frozen CLIP image encoder (frozen/clip.py) over the frames stage's shards into the cache:
V2A-Mapper's source."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

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


_stage = EncoderStage(_encoder, __name__, reads_frames=True)  # any frame count and size (one frame at a time)
run, __getattr__ = _stage.run, _stage.module_getattr  # no preflight: nothing to check
