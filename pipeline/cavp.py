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
    chunk_frames: Annotated[int, Field(ge=1)] = names.CAVP_N_FRAMES  # frames per encoder call


Runtime = EncoderRuntime


def _encoder():
    """frozen/cavp.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import cavp

    return cavp


_stage = EncoderStage(_encoder, __name__)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
