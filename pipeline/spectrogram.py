"""Log-mel spectrogram PNGs of generated (and ground-truth) audio, drawn with Pillow (no plotting dependency).

One figure, one panel per waveform stacked vertically on a shared time axis; each panel has a title (with the
sound's peak level), a frequency axis (Hz ticks placed on the mel scale) and the time axis in seconds; a colour bar
on the right is labelled in dBFS.

Every panel uses the same absolute scale: dB relative to full scale (dBFS), where 0 dBFS is the level of a
full-scale sine (amplitude 1) in its mel band, and colours span ``FLOOR_DBFS`` (-100, black: below 16-bit PCM's
quantisation floor) .. 0 dBFS (pale yellow). A quiet sound is drawn dark, a silent one black, whatever panel or
figure it is in: the generate stage's PNGs, the gallery and the web page are directly comparable. A sound whose
sample peak is below ``SILENT_DBFS`` (-60, the frames stage's ``silence_dbfs`` default) is titled "SILENT".
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from frozen.audio import hann, mel_filters, png_log_mel
from v2a.io import atomic_path

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 1024, 160, 64  # AudioLDM-2's mel front end: 10 ms hop, 64 bands up to 8 kHz
FLOOR_DBFS, TOP_DBFS = -100.0, 0.0  # the colour scale
SILENT_DBFS = -60.0  # a sample peak below this: "silent" (pipeline/frames.py silence_dbfs, same rule)
PANEL_H, LEFT, RIGHT, TOP, GAP, BOTTOM = 160, 64, 72, 24, 34, 44
BAR_W, FONT_PX = 12, 12  # the colour bar (in the right margin); the text size
# dark blue -> purple -> orange -> pale yellow; interpolated linearly (a magma-like map)
_ANCHORS = np.array([[0, 0, 4], [60, 15, 110], [150, 40, 120], [235, 95, 70], [252, 200, 90], [252, 253, 191]], float)
# power of a full-scale sine in the band it falls on: |rfft(hann * sin)|^2 at its bin = (sum(hann) / 2)^2
_FULL_SCALE_DB = 20.0 * math.log10(hann(N_FFT, numpy_hanning=True).sum() / 2)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """HTK-mel triangular filters, (n_mels, n_fft // 2 + 1), peak 1."""
    return mel_filters(sample_rate, n_fft, n_mels, fmin, fmax or sample_rate / 2, scale="htk")


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Power log-mel in dB, (n_mels, frames); centred frames (reflect padding), Hann window (frozen/audio.py)."""
    return png_log_mel(audio, sample_rate, N_FFT, HOP, N_MELS)


def log_mel_dbfs(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """:func:`log_mel` in dBFS, (n_mels, frames): a full-scale sine reads about 0 in its band (within ~2 dB, the
    window's leakage into a wide band), a sine at amplitude ``a`` about ``20 log10(a)``."""
    return log_mel(audio, sample_rate) - _FULL_SCALE_DB


def peak_dbfs(audio: np.ndarray | None) -> float:
    """The sample peak in dBFS, ``20 log10(max |x|)``; -inf for no or all-zero audio."""
    if audio is None or np.size(audio) == 0:
        return -math.inf
    peak = float(np.max(np.abs(np.asarray(audio, np.float64))))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def is_silent(audio: np.ndarray | None) -> bool:
    return peak_dbfs(audio) < SILENT_DBFS


def level_text(audio: np.ndarray | None) -> str:
    """``"peak -12.3 dBFS"``, or ``"peak -90.4 dBFS: SILENT"`` below ``SILENT_DBFS`` (titles, logs, the gallery)."""
    db = peak_dbfs(audio)
    shown = "-inf" if db == -math.inf else f"{db:.1f}"
    return f"peak {shown} dBFS" + (": SILENT" if db < SILENT_DBFS else "")


def write_spectrogram_png(path: str | os.PathLike, generated: np.ndarray, ground_truth: np.ndarray | None = None, *,
                          sample_rate: int = SAMPLE_RATE, title: str = "", width: int = 800) -> tuple[int, int]:
    """Write the PNG (atomic); returns its (width, height): ``width`` x (panels * (160 + 34) + 34).

    Both panels on one absolute dBFS scale (module docstring); each title ends with the sound's peak level.
    """
    panels = [("Generated" + (f": {title}" if title else ""), generated)]
    if ground_truth is not None:
        panels.append(("Ground truth (the video's own sound)", ground_truth))
    seconds = max(len(a) for _, a in panels) / sample_rate
    height = TOP + len(panels) * (PANEL_H + GAP) - GAP + BOTTOM
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=FONT_PX)
    plot_w = width - LEFT - RIGHT
    for k, (name, audio) in enumerate(panels):
        y0 = TOP + k * (PANEL_H + GAP)
        mel = log_mel_dbfs(np.asarray(audio, np.float64), sample_rate)
        frames_w = max(1, round(plot_w * (mel.shape[1] * HOP / sample_rate) / seconds)) if seconds else plot_w
        rgb = _colour((mel - FLOOR_DBFS) / (TOP_DBFS - FLOOR_DBFS))[::-1]  # low frequencies at the bottom
        img.paste(Image.fromarray(rgb).resize((min(frames_w, plot_w), PANEL_H), Image.NEAREST), (LEFT, y0))
        draw.rectangle([LEFT - 1, y0 - 1, LEFT + plot_w, y0 + PANEL_H], outline="black")
        level = level_text(audio)
        draw.text((LEFT, y0 - FONT_PX - 4), f"{name}  ({level})", fill=(190, 0, 0) if is_silent(audio) else "black",
                  font=font)
        _freq_ticks(draw, font, y0, sample_rate)
        _time_ticks(draw, font, y0 + PANEL_H, seconds, plot_w)
    draw.text((LEFT + plot_w // 2, height - 4), "Time (s)", fill="black", font=font, anchor="md")
    draw.text((2, 1), "Hz (mel)", fill="black", font=font)
    _colour_bar(img, draw, font, LEFT + plot_w + 10, TOP, height - BOTTOM - TOP)  # as tall as the panels
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return img.size


def _colour(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    f = (v - i)[..., None]
    return (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).astype(np.uint8)  # (..., 3)


def _colour_bar(img: Image.Image, draw, font, x: int, y0: int, h: int) -> None:
    """The scale, top (0 dBFS) to bottom (-100), ticks every 20 dB, titled "dBFS"."""
    ramp = _colour(np.linspace(1.0, 0.0, h))[:, None, :].repeat(BAR_W, axis=1)  # (h, BAR_W, 3)
    img.paste(Image.fromarray(ramp), (x, y0))
    draw.rectangle([x - 1, y0 - 1, x + BAR_W, y0 + h], outline="black")
    draw.text((x - 4, 1), "dBFS", fill="black", font=font)
    for db in np.arange(TOP_DBFS, FLOOR_DBFS - 1e-9, -20.0):
        y = y0 + round((h - 1) * (TOP_DBFS - db) / (TOP_DBFS - FLOOR_DBFS))
        draw.line([x + BAR_W, y, x + BAR_W + 4, y], fill="black")
        draw.text((x + BAR_W + 6, y), f"{db:g}", fill="black", font=font, anchor="lm")


def _freq_ticks(draw, font, y0: int, sample_rate: int) -> None:
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    top = mel(sample_rate / 2)
    for hz in (0, 500, 1000, 2000, 4000, 8000):
        if hz > sample_rate / 2:
            continue
        y = y0 + PANEL_H - round(PANEL_H * mel(hz) / top)
        draw.line([LEFT - 5, y, LEFT - 1, y], fill="black")
        label = f"{hz // 1000}k" if hz >= 1000 else str(hz)
        draw.text((LEFT - 8, y), label, fill="black", font=font, anchor="rm")


def _time_ticks(draw, font, y: int, seconds: float, plot_w: int) -> None:
    if seconds <= 0:
        return
    step = 1.0 if seconds <= 12 else 5.0
    for t in np.arange(0.0, seconds + 1e-9, step):
        x = LEFT + round(plot_w * t / seconds)
        draw.line([x, y + 1, x, y + 5], fill="black")
        draw.text((x, y + 7), f"{t:g}", fill="black", font=font, anchor="mt")
