"""Log-mel spectrogram PNGs of generated (and ground-truth) audio, drawn with Pillow (no plotting dependency).

One figure, one panel per waveform stacked vertically on a shared time axis; each panel has a title, a
frequency axis (Hz ticks placed on the mel scale) and the time axis in seconds. Colours span ``db_range`` dB below
the loudest bin: of each panel (``shared_scale=False``, the generate stage's PNGs: a quiet generation still shows
its shape), or of the whole figure (``shared_scale=True``, the gallery: ground truth and generated comparable).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from frozen.audio import mel_filters, png_log_mel
from v2a.io import atomic_path

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 1024, 160, 64  # AudioLDM-2's mel front end: 10 ms hop, 64 bands up to 8 kHz
PANEL_H, LEFT, RIGHT, TOP, GAP, BOTTOM = 160, 64, 16, 22, 30, 40
# dark blue -> purple -> orange -> pale yellow; interpolated linearly (a magma-like map)
_ANCHORS = np.array([[0, 0, 4], [60, 15, 110], [150, 40, 120], [235, 95, 70], [252, 200, 90], [252, 253, 191]], float)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """HTK-mel triangular filters, (n_mels, n_fft // 2 + 1), peak 1."""
    return mel_filters(sample_rate, n_fft, n_mels, fmin, fmax or sample_rate / 2, scale="htk")


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Power log-mel in dB, (n_mels, frames); centred frames (reflect padding), Hann window (frozen/audio.py)."""
    return png_log_mel(audio, sample_rate, N_FFT, HOP, N_MELS)


def write_spectrogram_png(path: str | os.PathLike, generated: np.ndarray, ground_truth: np.ndarray | None = None, *,
                          sample_rate: int = SAMPLE_RATE, title: str = "", width: int = 800,
                          db_range: float = 80.0, shared_scale: bool = False) -> tuple[int, int]:
    """Write the PNG (atomic); returns its (width, height): ``width`` x (panels * (160 + 30) + 62).

    ``shared_scale``: one colour scale (the figure's peak) for every panel, so level differences show; otherwise
    each panel spans ``db_range`` dB below its own peak.
    """
    panels = [("Generated" + (f": {title}" if title else ""), log_mel(generated, sample_rate))]
    if ground_truth is not None:
        panels.append(("Ground truth", log_mel(ground_truth, sample_rate)))
    seconds = max(len(generated), 0 if ground_truth is None else len(ground_truth)) / sample_rate
    height = TOP + len(panels) * (PANEL_H + GAP) - GAP + BOTTOM
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    plot_w = width - LEFT - RIGHT
    figure_top = max(float(mel.max()) for _, mel in panels)
    for k, (name, mel) in enumerate(panels):
        y0 = TOP + k * (PANEL_H + GAP)
        frames_w = max(1, round(plot_w * (mel.shape[1] * HOP / sample_rate) / seconds)) if seconds else plot_w
        top_db = figure_top if shared_scale else float(mel.max())
        rgb = _colour((mel - (top_db - db_range)) / db_range)[::-1]  # low frequencies at the bottom
        img.paste(Image.fromarray(rgb).resize((min(frames_w, plot_w), PANEL_H), Image.NEAREST), (LEFT, y0))
        draw.rectangle([LEFT - 1, y0 - 1, LEFT + plot_w, y0 + PANEL_H], outline="black")
        draw.text((LEFT, y0 - 14), name, fill="black", font=font)
        _freq_ticks(draw, font, y0, sample_rate)
        _time_ticks(draw, font, y0 + PANEL_H, seconds, plot_w)
    draw.text((LEFT + plot_w // 2 - 24, height - 14), "Time (s)", fill="black", font=font)
    draw.text((2, TOP - 14), "Hz (mel)", fill="black", font=font)
    if shared_scale:
        draw.text((width - RIGHT - 150, TOP - 14), f"one scale: top {db_range:g} dB", fill="black", font=font)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return img.size


def _colour(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    f = (v - i)[..., None]
    return (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).astype(np.uint8)  # (..., 3)


def _freq_ticks(draw, font, y0: int, sample_rate: int) -> None:
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    top = mel(sample_rate / 2)
    for hz in (0, 500, 1000, 2000, 4000, 8000):
        if hz > sample_rate / 2:
            continue
        y = y0 + PANEL_H - round(PANEL_H * mel(hz) / top)
        draw.line([LEFT - 5, y, LEFT - 1, y], fill="black")
        label = f"{hz // 1000}k" if hz >= 1000 else str(hz)
        draw.text((LEFT - 8 - 6 * len(label), y - 5), label, fill="black", font=font)


def _time_ticks(draw, font, y: int, seconds: float, plot_w: int) -> None:
    if seconds <= 0:
        return
    step = 1.0 if seconds <= 12 else 5.0
    for t in np.arange(0.0, seconds + 1e-9, step):
        x = LEFT + round(plot_w * t / seconds)
        draw.line([x, y + 1, x, y + 5], fill="black")
        draw.text((x - 3, y + 7), f"{t:g}", fill="black", font=font)

