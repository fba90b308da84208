"""Stage ``timechat``: run the frozen timechat encoder (frozen/timechat.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

__all__ = ["run", "read_record", "preflight", "Params", "Runtime"]

Positive = Annotated[int, Field(ge=1)]


class Params(EncoderParams):
    """``stages.timechat.params`` (checkpoints: a local file or a hub reference owner/repo[/path])."""

    eva_vit: str | None = None  # eva_vit_g.pth
    instructblip: str | None = None  # instruct_blip_vicuna7b_trimmed.pth (frame Q-Former)
    timechat: str | None = None  # timechat_7b.pth (time-aware frame + video Q-Former)
    eva_vit_revision: str | None = None
    instructblip_revision: str | None = None
    timechat_revision: str | None = None
    tokenizer: str | None = "bert-base-uncased"  # full: folder or hub id of the BERT tokenizer
    window: Positive = 4  # frames per video Q-Former window
    stride: Positive = 4  # frames between windows
    fps: Annotated[float, Field(gt=0)] = 4.0  # of the frames (timestamps in the instruction)
    llama_proj: bool = False  # also cache the 4096-d LLaMA projection
    frame_batch: Positive = names.TIMECHAT_N_FRAMES  # frames per ViT call


Runtime = EncoderRuntime


def _encoder():
    """frozen/timechat.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import timechat

    return timechat


_stage = EncoderStage(_encoder, __name__)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
