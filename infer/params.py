"""Generation settings (:class:`GenerationSettings`) and the ``generate`` stage's params (:class:`GenerateParams`,
the settings plus what the stage alone needs), without torch or diffusers.

Every generation entry point (the stage, ``v2a generate``, ``MFMMapperPipeline``, the web page) runs with one
``GenerationSettings``: each field and its default is written here once, and the pipeline folder's
``generation_config.json`` stores them (infer/hub.py). v2a/schema.py imports every stage module to check a
configuration, so infer/stage.py takes its ``Params`` from here; infer/generate.py and infer/audioldm2.py re-export
these names (``infer.generate.GenerateParams``, ``infer.audioldm2.SCHEDULERS``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from v2a.schema import from_known_keys

from frozen.names import DEFAULT_NEGATIVE_PROMPT, NEGATIVE_GENERATED, SCHEDULERS  # noqa: F401 (re-exported)

GENERATORS = ("audioldm2", "audioldm")  # AudioLDM-2 (MFM-Mapper, Diff-Mapper) | AudioLDM (V2A-Mapper)


@dataclass
class GenerationSettings:
    """How sound is generated from the mapper's output (the paper's values by default)."""

    steps: Annotated[int, Field(ge=1)] = 100
    scheduler: Literal["ddim", "dpm++"] = "ddim"  # ddim (paper, 100 steps) | dpm++ (DPM-Solver++ 2M: ~25 steps, README speed)
    guidance: Annotated[float, Field(ge=0)] = 3.5  # classifier-free guidance (<= 1: off)
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT  # AudioLDM-2's T5 stream (AudioLDM: unused)
    negative_generated: Literal["zeros", "prompt"] = "zeros"  # zeros (AudioLDM-2's unconditional AudioMAE) | prompt
    eta: float = 0.0
    audio_seconds: Annotated[float, Field(gt=0)] = 10.24  # generated per 10 s window; a call's default length
    seed: int = 0  # clip c gets clip_seed(seed, c's id); window k of it that + k (infer/core.py)
    overlap: float = 2.0  # seconds shared by consecutive 10 s windows (long videos)
    max_seconds: float = 600.0  # a whole video is covered up to this length
    # CLIP for `--prompt auto` (infer/labels.py): a weights-manifest entry (V2A-Mapper's CLIP), a CLIPModel folder or
    # hub id, or tiny; null: no automatic label (a video without one gets no prompt). The generate stage never uses
    # it (it keeps the dataset's labels).
    label_model: str | None = "clip_vit_l14"

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationSettings":
        """The settings of ``d`` (a pipeline folder's ``settings``); keys that are not settings are refused."""
        return check_settings(from_known_keys(cls, d, "generation settings"), "generation settings")

    def settings(self) -> "GenerationSettings":
        """Only the generation settings (of a ``GenerateParams`` too)."""
        names = {f.name for f in dataclasses.fields(GenerationSettings)}
        return GenerationSettings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def replace(self, **given) -> "GenerationSettings":
        """A copy with the values that are not None in ``given`` (a call's arguments), checked."""
        return check_settings(dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None}))


def check_settings(s, where: str = "generation settings"):
    """What the type annotations say, for settings built in code (the configuration check uses pydantic)."""
    if s.scheduler not in SCHEDULERS:
        raise ValueError(f"{where}: scheduler={s.scheduler!r} is not one of {SCHEDULERS}")
    if s.negative_generated not in NEGATIVE_GENERATED:
        raise ValueError(f"{where}: negative_generated={s.negative_generated!r}: use one of "
                         f"{NEGATIVE_GENERATED}")
    if int(s.steps) < 1:
        raise ValueError(f"{where}: steps={s.steps}: need at least 1 denoising step")
    if s.guidance < 0:
        raise ValueError(f"{where}: guidance={s.guidance}: must be >= 0 (<= 1 turns guidance off)")
    if s.label_model is not None and (not isinstance(s.label_model, str) or not s.label_model.strip()):
        raise ValueError(f"{where}: label_model={s.label_model!r}: name a CLIP checkpoint (or tiny), or null")
    if s.audio_seconds <= 0 or s.max_seconds <= 0 or s.overlap < 0:
        raise ValueError(f"{where}: audio_seconds={s.audio_seconds}, max_seconds={s.max_seconds}, "
                         f"overlap={s.overlap}: need positive lengths and overlap >= 0")
    return s


@dataclass
class GenerateParams(GenerationSettings):
    """``stages.generate.params``: the generation settings and what the stage needs besides (which AudioLDM(-2),
    which checkpoint of the mapper, which clips)."""

    model: Literal["full", "tiny", "random-full"] = "full"  # full (cvssp/audioldm2) | tiny | random-full (sizes)
    checkpoint: str | None = "cvssp/audioldm2"  # V2A-Mapper: an AudioLDM pipeline, e.g. cvssp/audioldm-s-full-v2
    half: bool = True
    crop_seconds: float | None = None  # e.g. 8.0 for evaluation; None keeps audio_seconds
    split: str = "test"  # the cache split the stage generates
    mapper: Literal["best", "last"] = "best"  # best | last checkpoint of the train stage
    use_label: bool = True  # the class label as text prompt (paper); False = no text
    max_clips: int | None = None
    gpt_dim: int = 32  # tiny only
    t5_dim: int = 16  # tiny only
    clap_dim: int = 16  # tiny AudioLDM only (V2A-Mapper): the CLAP width
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "GenerateParams":
        return check_settings(from_known_keys(cls, d, "generate params"), "generate params")

    def model_params(self, generator: str = "audioldm2") -> dict:
        """The params that build ``generator`` (frozen/audioldm2.py, frozen/audioldm.py): only those of its kind,
        as the pipeline folder records them."""
        if generator not in GENERATORS:
            raise ValueError(f"generator {generator!r} is not one of {GENERATORS}")
        if self.model == "full":
            return {"model": "full", "checkpoint": self.checkpoint, "half": self.half}
        if generator == "audioldm":
            return {"model": self.model, "seed": self.seed, "clap_dim": self.clap_dim}
        return {"model": self.model, "seed": self.seed, "gpt_dim": self.gpt_dim, "t5_dim": self.t5_dim}
