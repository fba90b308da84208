"""The ``generate`` stage's params (:class:`GenerateParams`) and the constants they name, without torch or diffusers.

v2a/schema.py imports every stage module to check a configuration, so infer/stage.py takes its ``Params`` from
here; infer/generate.py and infer/audioldm2.py re-export these names (``infer.generate.GenerateParams``,
``infer.audioldm2.SCHEDULERS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from v2a.schema import from_known_keys

from frozen.names import DEFAULT_NEGATIVE_PROMPT, NEGATIVE_GENERATED, SCHEDULERS  # noqa: F401 (re-exported)


@dataclass
class GenerateParams:
    model: Literal["full", "tiny", "random-full"] = "full"  # full (cvssp/audioldm2) | tiny | random-full (sizes)
    checkpoint: str | None = "cvssp/audioldm2"  # V2A-Mapper: an AudioLDM pipeline, e.g. cvssp/audioldm-s-full-v2
    half: bool = True
    steps: Annotated[int, Field(ge=1)] = 100
    scheduler: Literal["ddim", "dpm++"] = "ddim"  # ddim (paper, 100 steps) | dpm++ (DPM-Solver++ 2M: ~25 steps, README speed)
    guidance: float = 3.5
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    negative_generated: Literal["zeros", "prompt"] = "zeros"  # zeros (AudioLDM-2's unconditional AudioMAE) | prompt
    eta: float = 0.0
    audio_seconds: float = 10.24
    crop_seconds: float | None = None  # e.g. 8.0 for evaluation; None keeps audio_seconds
    seed: int = 0
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
        p = from_known_keys(cls, d, "generate params")
        if p.scheduler not in SCHEDULERS:
            raise ValueError(f"generate params: scheduler={p.scheduler!r} is not one of {SCHEDULERS}")
        return p

    def pipeline_params(self) -> dict:
        return {"model": self.model, "checkpoint": self.checkpoint, "half": self.half, "seed": self.seed,
                "gpt_dim": self.gpt_dim, "t5_dim": self.t5_dim, "clap_dim": self.clap_dim,
                "scheduler": self.scheduler}
