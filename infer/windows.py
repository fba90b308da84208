"""Long videos: overlapping 10 s windows and their equal-power crossfade.

The mapper was trained on 10 s clips (40 frames at 4 FPS), so a longer video is covered by windows of that length
that overlap by at least ``overlap`` seconds. Every window starts on the frame grid (a multiple of 1/fps) and is a
whole training-length clip: the last one ends at the video's end and the windows are spread evenly between. Each window's sound is generated separately (AudioLDM-2 makes 10.24 s; the
first 10 s, the part the visual window covers, are used) and consecutive windows are joined over their whole
overlap with an equal-power crossfade: gains cos(pi/2 t) and sin(pi/2 t), whose squares sum to 1, so uncorrelated
sounds keep their loudness through the seam and no sample jumps.
"""

from __future__ import annotations

import math

import numpy as np


def plan_windows(seconds: float, *, window: float = 10.0, overlap: float = 2.0, fps: int = 4) -> list[float]:
    """Start times (s) of the windows covering ``seconds`` of video; one window when it fits in one.

    Starts lie on the 1/fps grid, evenly spread; consecutive windows overlap by at least ``overlap`` seconds and the
    last window reaches the end of the video (by less than a frame past it).
    """
    if seconds <= 0:
        raise ValueError(f"video length {seconds} s: must be positive")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} s: must be >= 0 and shorter than the {window} s window")
    hop = math.floor((window - overlap) * fps) / fps  # on the frame grid, so the overlap only grows
    if hop <= 0:
        raise ValueError(f"overlap={overlap} s leaves no hop between {window} s windows at {fps} FPS")
    if seconds <= window:
        return [0.0]
    last = math.ceil((seconds - window) * fps - 1e-6)  # in frames: ends at (or a frame after) the video's end
    n = math.ceil(last / (hop * fps) - 1e-9) + 1
    # evenly spread, floored to the frame grid: consecutive starts are at most `hop` apart
    return [math.floor(k * last / (n - 1) + 1e-9) / fps for k in range(n)]


def equal_power_gains(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) over ``n`` samples; fade_out**2 + fade_in**2 == 1 at every sample."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)  # sample centres in (0, 1)
    return np.cos(0.5 * np.pi * t), np.sin(0.5 * np.pi * t)


def crossfade_join(pieces: list[np.ndarray], starts: list[int], span: int, total: int) -> np.ndarray:
    """Join window audio into one (total,) float32 track.

    pieces[k] (>= span samples) is the sound of the window starting at sample starts[k]; it owns
    [starts[k], starts[k] + span). Where window k-1 and k overlap, the two are crossfaded with equal-power gains
    over the whole overlap. Samples past the last window's span (if any) are zero; the track is cut to ``total``.
    """
    if len(pieces) != len(starts) or not pieces:
        raise ValueError(f"{len(pieces)} pieces for {len(starts)} starts: need one start per piece, at least one")
    if any(b <= a for a, b in zip(starts, starts[1:])) or starts[0] != 0:
        raise ValueError(f"window starts {starts} must begin at 0 and increase")
    out = np.zeros(max(total, starts[-1] + span), dtype=np.float64)
    end = 0  # end of what is written so far
    for k, (piece, s) in enumerate(zip(pieces, starts)):
        piece = np.asarray(piece, dtype=np.float64)[:span]
        if len(piece) < span:
            raise ValueError(f"window {k} has {len(piece)} samples, fewer than its span {span}")
        m = max(0, end - s)  # overlap with the previous window
        if m:
            fade_out, fade_in = equal_power_gains(m)
            out[s: s + m] = out[s: s + m] * fade_out + piece[:m] * fade_in
        out[s + m: s + span] = piece[m:]
        end = s + span
    return out[:total].astype(np.float32)
