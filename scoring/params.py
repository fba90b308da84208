"""The ``evaluate`` stage's params (:class:`EvalParams`) and the constants they name, without torch or scipy.

v2a/schema.py imports every stage module to check a configuration, so scoring/stage.py takes its ``Params`` from
here; scoring/run.py re-exports :class:`EvalParams` (``scoring.run.EvalParams``), scoring/audio.py ``EVAL_SR`` and
scoring/metrics.py ``IS_SPLITS``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

EVAL_SR = 16000  # the rate the embedders and metrics work at (scoring/audio.py)
IS_SPLITS = 10  # Inception Score splits (scoring/metrics.py)


@dataclass
class EvalParams:
    model: Literal["full", "tiny", "random-full"] = "full"  # random-full: released sizes, random weights
    seed: int = 0
    seconds: float = 8.0
    panns_ckpt: str | None = None
    vggish_ckpt: str | None = None
    passt_ckpt: str | None = None
    imagebind_ckpt: str | None = None
    synchformer_ckpt: str | None = None
    is_splits: int = IS_SPLITS
    gallery: bool = True
    gallery_max_clips: int = 50
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> "EvalParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"evaluate.params: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * EVAL_SR))
