"""Stage ``cavp``: run the frozen cavp encoder (frozen/cavp.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

__all__ = ["run", "read_record", "preflight", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.cavp.params``."""

    checkpoint: str | None = None  # full: hub id (SimianLuo/Diff-Foley) or a local cavp_epoch66.ckpt
    filename: str = names.CAVP_HUB_FILENAME  # the file inside the hub repo
    revision: str | None = None  # hub revision (branch, tag or commit)
    chunk_frames: Annotated[int, Field(ge=1)] = names.CAVP_CHUNK_FRAMES  # frames per encoder call


Runtime = EncoderRuntime


def agree(name: str, params: dict) -> list[str]:
    """CAVP reads any number of frames (no temporal stride: one feature per frame) of 224 x 224 px."""
    frames = params.get("frames")
    return frames.grid.reader_problems(name, size=names.CAVP_IMAGE_SIZE) if frames is not None else []


def _encoder():
    """frozen/cavp.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import cavp

    return cavp


_stage = EncoderStage(_encoder, __name__, reads_frames=True)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
