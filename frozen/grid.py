"""The clip grid: one source for every count that follows from a clip's frame rate, length, frame size and audio rate.

The frames stage decodes frame i as the frame shown at t_i = i / fps over the first ``seconds`` of a clip, and the
audio as AudioLDM-2 reads it (the stream resampled to ``sample_rate``, then cut to ``seconds``). Everything that
reads those arrays takes its counts from here instead of a constant of its own::

    grid = ClipGrid(fps=4, seconds=10.0, size=224, sample_rate=16_000)
    grid.n_frames                 # 40 frames a clip (CAVP, TimeChat and CLIP read them all)
    grid.frame_shape              # (40, 224, 224, 3) uint8
    grid.n_samples                # 160,000 samples of audio
    grid.timestamps()             # TimeChat's instruction times: round(i / fps, 1), so 0.25 s -> 0.2
    grid.windows(4, 4)            # TimeChat's video Q-Former windows [(0, 4), (4, 8), ...]: 10 of them

Rules (:meth:`ClipGrid.problems`, checked when the configuration loads): a whole number of frames and of samples
per clip, and AudioLDM-2's audio rate. Whether another frame count or size suits a reader is the reader's to say
(:meth:`ClipGrid.reader_problems`, from the stage modules' ``agree`` hooks, v2a/schema.py).
Plain Python: this module imports nothing heavy (the frames stage's workers and the configuration check use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUDIO_RATE = 16_000  # AudioLDM-2's rate: its AudioMAE targets, CLAP's input here and the generated audio
WHERE = "stages.frames.params"  # where a user sets the grid


@dataclass(frozen=True)
class ClipGrid:
    """A clip as the frames stage stores it: ``fps`` frames a second of ``size`` x ``size`` RGB over ``seconds``,
    and ``seconds`` of mono audio at ``sample_rate``."""

    fps: int = 4
    seconds: float = 10.0
    size: int = 224
    sample_rate: int = AUDIO_RATE

    @property
    def n_frames(self) -> int:
        """Frames a clip: fps x seconds (a whole number on a valid grid)."""
        return int(round(self.fps * self.seconds))

    @property
    def n_samples(self) -> int:
        """Audio samples a clip at ``sample_rate``."""
        return int(round(self.sample_rate * self.seconds))

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        return (self.n_frames, self.size, self.size, 3)  # (T, H, W, 3) uint8 RGB

    def frame_times(self) -> list[float]:
        """t_i = i / fps: frame i is the frame shown then (pipeline/media.py)."""
        return [i / self.fps for i in range(self.n_frames)]

    def timestamps(self) -> list[float]:
        """The time TimeChat writes into frame i's instruction: ``round(i / fps, 1)`` (Python's rounding)."""
        return [round(i / self.fps, 1) for i in range(self.n_frames)]

    def windows(self, window: int, stride: int) -> list[tuple[int, int]]:
        """TimeChat's video Q-Former windows over this grid's frames (:func:`windows`)."""
        return windows(self.n_frames, window, stride)

    def n_windows(self, window: int, stride: int) -> int:
        """ceil(n_frames / stride)."""
        return len(self.windows(window, stride))

    def problems(self) -> list[str]:
        """What makes this grid unusable, one line each (empty: fine)."""
        out = []
        frames = self.fps * self.seconds
        if abs(frames - round(frames)) > 1e-6 or round(frames) < 1:
            out.append(f"{WHERE}.seconds: {self.seconds:g} s at {self.fps} fps is {frames:g} frames; a clip must "
                       f"hold a whole number of frames (e.g. seconds {math.ceil(frames) / self.fps:g})")
        samples = self.sample_rate * self.seconds
        if abs(samples - round(samples)) > 1e-6:
            out.append(f"{WHERE}.seconds: {self.seconds:g} s at {self.sample_rate} Hz is {samples:g} samples; a clip "
                       f"must hold a whole number of samples")
        if self.sample_rate != AUDIO_RATE:
            out.append(f"{WHERE}.sample_rate: {self.sample_rate} Hz; AudioLDM-2's audio (the AudioMAE targets, the "
                       f"generated sound, CLAP's input) is {AUDIO_RATE} Hz, so the cache must be too")
        return out

    def reader_problems(self, reader: str, *, size: int | None = None, max_frames: int | None = None,
                        why: str = "") -> list[str]:
        """Whether the stage ``reader`` can read this grid's frames: ``size`` the frame side its network takes,
        ``max_frames`` the most frames it can place in time (``why``: what sets that limit)."""
        out = []
        if size is not None and self.size != size:
            out.append(f"{WHERE}.size: {self.size} px, but the {reader} stage reads {size} x {size} frames; "
                       f"set size: {size}")
        if max_frames is not None and self.n_frames > max_frames:
            out.append(f"{WHERE}.fps: {self.fps} fps x {self.seconds:g} s = {self.n_frames} frames, but the {reader} "
                       f"stage places at most {max_frames}{f' ({why})' if why else ''}; lower fps or seconds")
        return out


def windows(n_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """TimeChat's video Q-Former windows [(start, end)] over ``n_frames`` frames, like the reference's
    ``range(0, T, stride)`` with ``frames[i:i + window]``: the last ones are cut at the end (kept, never padded or
    dropped), so there are ceil(n_frames / stride)."""
    if window < 1 or stride < 1:
        raise ValueError(f"timechat: window and stride must be >= 1, got window={window}, stride={stride}")
    return [(s, min(s + window, n_frames)) for s in range(0, n_frames, stride)]


def grid_of(params) -> ClipGrid:
    """The grid of the frames stage's params (its validated Params, or their dict as recorded in plan.json)."""
    get = params.get if isinstance(params, dict) else (lambda k, d: getattr(params, k, d))
    return ClipGrid(fps=int(get("fps", 4)), seconds=float(get("seconds", 10.0)), size=int(get("size", 224)),
                    sample_rate=int(get("sample_rate", AUDIO_RATE)))
