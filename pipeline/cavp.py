"""Stage ``cavp``: run the frozen cavp encoder (frozen/cavp.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, encoder_preflight, read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

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


def __getattr__(name: str):
    if name == "encoder":  # the frozen module, as this module's ``encoder`` before it was imported lazily
        return _encoder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, _encoder())


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Problems found before the stage starts (no weights loaded): see frozen/cavp.py ``preflight``."""
    return encoder_preflight(ctx, _encoder())
