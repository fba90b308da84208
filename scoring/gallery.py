"""A static, offline, self-contained HTML gallery: per clip its label and prompt, a frame strip, one spectrogram
figure (generated over ground truth, time and frequency axes, one absolute dBFS colour scale with its colour bar: the
per-clip renderer of ``pipeline.spectrogram``), each sound's peak level (marked "silent" below -60 dBFS), players for
both sounds and the muxed video. Every medium is copied (or written) into
``<gallery>/media/<clip>/``, so the folder can be zipped, moved or served alone; nothing is fetched from the
network."""

from __future__ import annotations

import html
import logging
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from pipeline.spectrogram import SILENT_DBFS, is_silent, level_text, write_spectrogram_png
from scoring.audio import EVAL_SR, load_audio
from v2a.io import atomic_write_text, check_clip_id

log = logging.getLogger(__name__)

_CSS = """body{font-family:sans-serif;margin:1em;background:#fafafa}
.clip{border:1px solid #ccc;background:#fff;margin:1em 0;padding:.5em}
.frames img{height:72px;margin-right:2px}.spec img{max-width:100%}.meta{color:#333}
.row{display:flex;gap:1em;flex-wrap:wrap}.silent{color:#b00;font-weight:bold}.col{flex:1;min-width:280px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;font-size:.85em}"""


def _rel(target: Path, base: Path) -> str:
    return Path(target).resolve().relative_to(base.resolve()).as_posix()  # inside the gallery, by construction


def _copy_in(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def _save_png(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)
    return path


def _frame_files(frames: Any, clip_dir: Path, max_frames: int) -> list[Path]:
    if frames is None:
        return []
    if isinstance(frames, np.ndarray):  # (T, H, W, 3) uint8
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames array must be (T, H, W, 3), got {frames.shape}")
        idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
        return [_save_png(frames[i], clip_dir / f"frame_{j:02d}.png") for j, i in enumerate(idx)]
    files = [Path(f) for f in frames]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"frame files do not exist: {missing[:3]}")
    idx = np.linspace(0, len(files) - 1, min(max_frames, len(files))).round().astype(int) if files else []
    return [_copy_in(files[i], clip_dir / f"frame_{j:02d}{files[i].suffix.lower()}") for j, i in enumerate(idx)]


def _audio_file(src: Any, clip_dir: Path, name: str) -> tuple[Path | None, np.ndarray | None]:
    """-> (the wav inside the gallery, the waveform for the spectrogram); a file is copied in, an array written."""
    if src is None:
        return None, None
    try:
        wav = load_audio(src)
    except (OSError, RuntimeError, ValueError) as e:
        log.warning("gallery: cannot read %s audio: %s", name, e)
        return None, None
    if isinstance(src, (str, Path)):
        return _copy_in(Path(src), clip_dir / f"{name}{Path(src).suffix.lower()}"), wav
    import soundfile as sf

    path = clip_dir / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, EVAL_SR)
    return path, wav


def _level_html(name: str, wave: np.ndarray) -> str:
    text = html.escape(f"{name}: {level_text(wave)}")
    return f'<span class="silent">{text}</span>' if is_silent(wave) else text


def _scores_table(scores: dict | None) -> str:
    if not scores:
        return ""
    keys = [k for k in ("status", "reason", "kl_panns", "kl_passt", "ib_score", "desync", "short") if k in scores]
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(f'{scores[k]:.3f}' if isinstance(scores[k], float) else str(scores[k]))}</td></tr>"
        for k in keys if scores[k] not in (None, ""))
    return f"<table>{cells}</table>"


def _clip_html(clip, out_dir: Path, scores: dict | None, max_frames: int) -> str:
    cid = check_clip_id(clip.clip_id)
    clip_dir = out_dir / "media" / cid
    label, prompt = getattr(clip, "label", None), getattr(clip, "prompt", None)
    parts = [f'<div class="clip" id="clip-{cid}" data-clip-id="{cid}"><h2>{html.escape(cid)}</h2>',
             f'<p class="meta">label: <b class="label">{html.escape(label or "-")}</b> &middot; prompt: '
             f'<b class="prompt">{html.escape(prompt or "(none)")}</b></p>']
    frames = _frame_files(clip.frames, clip_dir, max_frames)
    if frames:
        imgs = "".join(f'<img src="{html.escape(_rel(f, out_dir))}" alt="frame {i}">' for i, f in enumerate(frames))
        parts.append(f'<div class="frames">{imgs}</div>')
    gen_path, gen = _audio_file(clip.gen, clip_dir, "gen")
    gt_path, gt = _audio_file(clip.gt, clip_dir, "gt")
    levels = [_level_html(name, w) for name, w in (("generated", gen), ("ground truth", gt)) if w is not None]
    if levels:
        parts.append(f'<p class="levels">{" &middot; ".join(levels)}</p>')
    if gen is not None:  # one figure, generated over ground truth, on one absolute dBFS scale
        spec = clip_dir / "spectrogram.png"
        write_spectrogram_png(spec, gen, gt, title=prompt or label or cid)
        parts.append(f'<div class="spec"><img src="{html.escape(_rel(spec, out_dir))}" alt="spectrograms of '
                     f'{html.escape(cid)}"></div>')
    cols = []
    for title, path in (("Generated", gen_path), ("Ground truth", gt_path)):
        player = (f'<audio controls preload="none" src="{html.escape(_rel(path, out_dir))}"></audio>'
                  if path is not None else '<p class="missing">missing</p>')
        cols.append(f'<div class="col"><h3>{title}</h3>{player}</div>')
    parts.append(f'<div class="row">{"".join(cols)}</div>')
    if clip.video is not None and Path(clip.video).is_file():
        video = _copy_in(Path(clip.video), clip_dir / f"video{Path(clip.video).suffix.lower()}")
        parts.append(f'<video controls preload="none" width="360" src="{html.escape(_rel(video, out_dir))}">'
                     "</video>")
    parts.append(_scores_table(scores))
    parts.append("</div>")
    return "\n".join(parts)


def build_gallery(clips: Iterable, out_dir: str | Path, *, scores: dict[str, dict] | None = None,
                  title: str = "MFM-Mapper samples", max_frames: int = 8) -> Path:
    """Write ``out_dir/index.html`` (+ media/) for ``clips`` (ClipPair-like objects); returns the page path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "media", ignore_errors=True)  # no media of clips from an earlier build
    body = [_clip_html(c, out_dir, (scores or {}).get(c.clip_id), max_frames) for c in clips]
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(body)} clips; audio cropped to 8 s for the metrics. Spectrograms share one absolute scale "
            f"(dBFS: 0 is a full-scale sine; black is -100 or quieter); a sound whose peak is below "
            f"{SILENT_DBFS:g} dBFS is marked <span class=\"silent\">SILENT</span>.</p>\n" + "\n".join(body) + "\n</body></html>\n")
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index
