"""Stage ``clip``: run the frozen CLIP image encoder (frozen/clip.py) over the frames stage's shards into the cache:
V2A-Mapper's source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frozen import clip as encoder
from pipeline.encode import read_record, run_encoder_stage

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

__all__ = ["run", "read_record"]


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, encoder)
