"""`v2a evaluate --pred DIR --gt DIR [--video DIR]`: the evaluate stage's protocol on any folders of audio.

Files are matched by stem (``dog_001.wav`` in ``--pred`` with ``dog_001.wav``/``.flac``/``.mp4``/... in ``--gt``
and ``dog_001.mp4``/``.mkv``/... in ``--video``), so another system's outputs are scored exactly like ours (same
metrics code, same 8 s crop, same evaluation models from ``stages.evaluate.params``). ``--gt`` may hold the source
videos themselves, as the evaluate stage uses them: their first audio stream read whole, at its own rate, every
channel (scoring/audio.py ``read_audio``, the stage's reading of a source file); those videos also serve as
``--video`` when it is not given. Every stem that is not on both audio sides is listed in ``unmatched.csv`` (and
counted in metrics.json): a prediction without ground truth is not scored, a ground truth without a prediction is
not silently dropped from the count. The report names the ``--pred`` folder.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from scoring.run import ClipPair
from scoring.run import run as evaluate_pairs
from v2a.io import atomic_write_text, check_clip_id
from scoring.params import EvalParams

log = logging.getLogger(__name__)

AUDIO_EXT = (".wav", ".flac")
VIDEO_EXT = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".mpeg", ".mpg", ".m4v")


def _by_stem(folder: Path | None, exts: tuple[str, ...], what: str) -> dict[str, Path]:
    """{stem: file} of the files in ``folder`` with one of ``exts``; two files with one stem are an error."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in exts and not f.name.startswith("."):
            if f.stem in out:
                raise ValueError(f"{what} folder {folder} has two files for {f.stem!r}: {out[f.stem].name}, {f.name}")
            out[f.stem] = f
    return out


def match(pred: Path, gt: Path, video: Path | None = None) -> tuple[list[ClipPair], list[dict]]:
    """(pairs for every stem in both audio folders, unmatched rows ``{clip_id, missing, present}``)."""
    p, g = _by_stem(pred, AUDIO_EXT, "--pred"), _by_stem(gt, AUDIO_EXT + VIDEO_EXT, "--gt")
    v = _by_stem(video, VIDEO_EXT, "--video")
    if not p:
        raise ValueError(f"--pred folder {pred} holds no {'/'.join(AUDIO_EXT)} files")
    if not g:
        raise ValueError(f"--gt folder {gt} holds no audio ({'/'.join(AUDIO_EXT)}) or video "
                         f"({'/'.join(VIDEO_EXT)}) files")
    both = sorted(set(p) & set(g))
    unmatched = [{"clip_id": s, "missing": "ground truth", "present": str(p[s])} for s in sorted(set(p) - set(g))]
    unmatched += [{"clip_id": s, "missing": "prediction", "present": str(g[s])} for s in sorted(set(g) - set(p))]
    if video is not None:
        unmatched += [{"clip_id": s, "missing": "video", "present": str(p[s])} for s in both if s not in v]
    pairs = []
    for s in both:
        check_clip_id(s)
        pairs.append(ClipPair(s, g[s], p[s], v.get(s)))
    if not pairs:
        raise ValueError(f"no file stem is in both {pred} and {gt}: nothing to evaluate "
                         f"(e.g. {sorted(p)[:3]} vs {sorted(g)[:3]})")
    return pairs, unmatched


def unmatched_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["clip_id", "missing", "present"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def gt_videos(gt: Path) -> bool:
    """Whether the ``--gt`` folder holds videos (then they are the ``--video`` folder too, unless one is given)."""
    return any(f.suffix.lower() in VIDEO_EXT for f in _by_stem(gt, AUDIO_EXT + VIDEO_EXT, "--gt").values())


def evaluate_folders(params: EvalParams, pred: Path, gt: Path, out: Path, video: Path | None = None, **kw) -> dict:
    """Score ``pred`` against ``gt`` (and ``video`` for IB-score/DeSync; default: ``gt`` when it holds videos)
    into ``out``; returns metrics.json's dict."""
    if video is None and gt_videos(gt):
        video = gt
        log.info("evaluate: the --gt videos are also the videos for IB-score and DeSync (--video not given)")
    pairs, unmatched = match(pred, gt, video)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "unmatched.csv", unmatched_csv(unmatched))
    for kind in ("ground truth", "prediction", "video"):
        n = sum(r["missing"] == kind for r in unmatched)
        if n:
            log.warning("evaluate: %d stems have no %s (listed in %s)", n, kind, out / "unmatched.csv")
    record = {"source": {"pred": str(pred), "gt": str(gt), "video": None if video is None else str(video)},
              "unmatched": {k: sum(r["missing"] == k for r in unmatched) for k in ("ground truth", "prediction", "video")}}
    return evaluate_pairs(params, pairs=pairs, out_dir=out, record=record, **kw)
