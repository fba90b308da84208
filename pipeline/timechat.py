"""Stage ``timechat``: run the frozen timechat encoder (frozen/timechat.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

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
    llama_proj: bool = False  # also cache the 4096-d LLaMA projection
    frame_batch: Positive = names.TIMECHAT_FRAME_BATCH  # frames per ViT call
    fps: Annotated[None, Field(exclude=True)] = None  # retired: the timestamps follow stages.frames.params.fps

    @field_validator("fps", mode="before")
    @classmethod
    def _fps_retired(cls, value):
        if value is not None:
            raise ValueError("the frame rate is set once, in stages.frames.params.fps (TimeChat's timestamps and "
                             "windows follow the frames' clip grid); remove this key")
        return value


Runtime = EncoderRuntime


def agree(name: str, params: dict) -> list[str]:
    """TimeChat reads 224 x 224 frames (EVA ViT-g's position embeddings), at most 96 a clip (its frame position
    embeddings); the instruction times and windows follow the grid's fps."""
    frames = params.get("frames")
    if frames is None:
        return []
    return frames.grid.reader_problems(name, size=names.TIMECHAT_IMAGE_SIZE, max_frames=names.TIMECHAT_FRAME_POSITIONS,
                                       why="rows of video_frame_position_embedding")


def _encoder():
    """frozen/timechat.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import timechat

    return timechat


_stage = EncoderStage(_encoder, __name__, reads_frames=True)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
