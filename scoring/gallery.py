"""A static, offline HTML gallery: per clip a frame strip, spectrograms and players for ground truth and generated
audio, and the muxed video. Images and audio given as arrays are written beside the page; files given as paths are
referenced by relative path (nothing is fetched from the network)."""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from scoring.audio import EVAL_SR, load_audio, spectrogram_image
from v2a.io import atomic_write_text, check_clip_id

log = logging.getLogger(__name__)

_CSS = """body{font-family:sans-serif;margin:1em;background:#fafafa}
.clip{border:1px solid #ccc;background:#fff;margin:1em 0;padding:.5em}
.frames img{height:72px;margin-right:2px}.spec img{height:96px;max-width:100%}
.row{display:flex;gap:1em;flex-wrap:wrap}.col{flex:1;min-width:280px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;font-size:.85em}"""


def _rel(target: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), base.resolve())).as_posix()


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
    return [files[i] for i in idx]


def _audio_file(src: Any, clip_dir: Path, name: str) -> tuple[Path | None, np.ndarray | None]:
    """-> (a wav file to reference, the waveform for the spectrogram); writes arrays to ``clip_dir/name.wav``."""
    if src is None:
        return None, None
    try:
        wav = load_audio(src)
    except (OSError, RuntimeError, ValueError) as e:
        log.warning("gallery: cannot read %s audio: %s", name, e)
        return None, None
    if isinstance(src, (str, Path)):
        return Path(src), wav
    import soundfile as sf

    path = clip_dir / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, EVAL_SR)
    return path, wav


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
    parts = [f'<div class="clip" id="clip-{cid}" data-clip-id="{cid}"><h2>{html.escape(cid)}</h2>']
    frames = _frame_files(clip.frames, clip_dir, max_frames)
    if frames:
        imgs = "".join(f'<img src="{html.escape(_rel(f, out_dir))}" alt="frame {i}">' for i, f in enumerate(frames))
        parts.append(f'<div class="frames">{imgs}</div>')
    cols = []
    for label, name, src in (("Ground truth", "gt", clip.gt), ("Generated", "gen", clip.gen)):
        wav_path, wav = _audio_file(src, clip_dir, name)
        if wav is None:
            cols.append(f'<div class="col"><h3>{label}</h3><p class="missing">missing</p></div>')
            continue
        spec = _save_png(spectrogram_image(wav), clip_dir / f"{name}_spec.png")
        cols.append(f'<div class="col"><h3>{label}</h3><div class="spec"><img src="{html.escape(_rel(spec, out_dir))}" '
                    f'alt="{name} spectrogram"></div><audio controls preload="none" '
                    f'src="{html.escape(_rel(wav_path, out_dir))}"></audio></div>')
    parts.append(f'<div class="row">{"".join(cols)}</div>')
    if clip.video is not None:
        parts.append(f'<video controls preload="none" width="360" src="{html.escape(_rel(Path(clip.video), out_dir))}">'
                     "</video>")
    parts.append(_scores_table(scores))
    parts.append("</div>")
    return "\n".join(parts)


def build_gallery(clips: Iterable, out_dir: str | Path, *, scores: dict[str, dict] | None = None,
                  title: str = "MFM-Mapper samples", max_frames: int = 8) -> Path:
    """Write ``out_dir/index.html`` (+ media/) for ``clips`` (ClipPair-like objects); returns the page path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = [_clip_html(c, out_dir, (scores or {}).get(c.clip_id), max_frames) for c in clips]
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(body)} clips; audio cropped to 8 s for the metrics.</p>\n" + "\n".join(body) + "\n</body></html>\n")
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index
