"""Stage ``audiomae``: run the frozen audiomae encoder (frozen/audiomae.py) over the frames stage's shards into the cache."""

from __future__ import annotations

from frozen import names
from pipeline.encode import EncoderParams, EncoderRuntime, EncoderStage, read_record

__all__ = ["run", "read_record", "preflight", "Params", "Runtime"]


class Params(EncoderParams):
    """``stages.audiomae.params``."""

    checkpoint: str | None = None  # full: hub id (haoheliu/audioldm2-full) or a local file; tiny: optional
    filename: str = names.AUDIOMAE_HUB_FILENAME  # the file inside the hub repo
    revision: str | None = None  # hub revision
    prefix: str = names.AUDIOMAE_FULL_PREFIX  # key prefix of the AudioMAE weights inside the checkpoint's state_dict
    feature_layers: list[int] | None = None  # override the pooled layers


Runtime = EncoderRuntime


def agree(name: str, params: dict) -> list[str]:
    """AudioLDM-2's AudioMAE target is computed from a 10 s clip at 16 kHz (160,000 samples, padded to 10.24 s)."""
    frames = params.get("frames")
    if frames is None or frames.grid.n_samples == names.AUDIOMAE_CLIP_SAMPLES:
        return []
    g = frames.grid
    return [f"stages.frames.params.seconds: {g.seconds:g} s ({g.n_samples} samples at {g.sample_rate} Hz), but the "
            f"{name} stage's targets are AudioLDM-2's {names.AUDIOMAE_CLIP_SAMPLES} samples (10 s at 16 kHz); "
            f"set seconds: 10"]


def _encoder():
    """frozen/audiomae.py, imported when the stage runs or is checked, not when the configuration is validated (it
    imports torch); the defaults above come from frozen/names.py."""
    from frozen import audiomae

    return audiomae


_stage = EncoderStage(_encoder, __name__)
run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
