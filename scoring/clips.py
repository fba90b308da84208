"""Evaluation in two steps: what each clip gives alone (:func:`score_clip`), then the set's metrics (:func:`aggregate`).

Everything per clip (both sides loaded and cropped, their PANNs/VGGish/PaSST embeddings and logits, IB-score and
DeSync) is a :class:`ClipScore`; FD, KL, IS and the means need the whole set. The ``evaluate`` stage stores one
``ClipScore`` per clip (:func:`save_score`, ``.npz``: the embeddings exactly, the row as JSON) so that ranks can
share the clips and a run can resume; the rank that finishes last aggregates. ``scoring.run.evaluate_pairs``
chains the two steps in memory: both paths give the same numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scoring.audio import EVAL_SR
from scoring.embedders import AudioEmbedder, Embeddings, VideoAudioScorer
from v2a.io import atomic_path

log = logging.getLogger(__name__)

VIDEO_METRICS = (("ib_score", False), ("desync", True))  # (key, clips shorter than 8 s excluded)
SIDES = ("gen", "gt")


@dataclass
class ClipScore:
    row: dict  # clip_id, notes, short, gen_seconds, gt_seconds, vggish_examples, ib_score, desync
    rejects: list[dict] = field(default_factory=list)
    gen_ok: bool = False
    gt_ok: bool = False
    gt_missing: bool = False  # the pair had no ground truth at all
    emb: dict[str, dict[str, Embeddings]] = field(default_factory=lambda: {"gen": {}, "gt": {}})
    video: dict[str, str] = field(default_factory=dict)  # per video metric: ok | failed | no_video | short


def _embed(embedders: dict[str, AudioEmbedder], wav: np.ndarray, side: str, notes: list) -> dict[str, Embeddings]:
    out = {}
    for name, emb in embedders.items():
        try:
            e = emb.embed(wav)
        except ValueError as err:
            notes.append(f"{name} {side}: {err}")
            continue
        if not np.isfinite(e.embedding).all() or (e.logits is not None and not np.isfinite(e.logits).all()):
            notes.append(f"{name} {side}: NaN/inf embedding, excluded from {name} metrics")
            continue
        out[name] = e
    return out


def score_clip(pair, n: int, embedders: dict[str, AudioEmbedder], scorers: dict[str, VideoAudioScorer],
               load_side: Callable) -> ClipScore:
    """Everything one clip gives alone; ``n``: samples kept (8 s); ``load_side(src, n, what)`` reads one side."""
    row: dict[str, Any] = {"clip_id": pair.clip_id, "notes": [], "short": False}
    s = ClipScore(row=row, gt_missing=pair.gt is None)
    gen, row["gen_seconds"], why_gen = load_side(pair.gen, n, "generated audio")
    gt, row["gt_seconds"], why_gt = load_side(pair.gt, n, "ground truth")
    for why in (why_gen, why_gt):
        if why:
            row["notes"].append(why)
            s.rejects.append({"clip_id": pair.clip_id, "reason": why})
    s.gen_ok, s.gt_ok = gen is not None, gt is not None
    if gen is not None:
        row["short"] = gen.samples_at(EVAL_SR) < n  # its length once resampled to 16 kHz
        s.emb["gen"] = _embed(embedders, gen, "generated", row["notes"])
        if "vggish" in s.emb["gen"]:
            row["vggish_examples"] = s.emb["gen"]["vggish"].embedding.shape[0]
    if gt is not None:
        s.emb["gt"] = _embed(embedders, gt, "ground truth", row["notes"])
    for key, exclude_short in VIDEO_METRICS:
        if key not in scorers or gen is None:
            continue
        if pair.video is None:
            s.video[key] = "no_video"
        elif exclude_short and row["short"]:
            s.video[key] = "short"
        else:
            try:
                row[key] = float(scorers[key](Path(pair.video), gen))
                s.video[key] = "ok"
            except ValueError as err:  # e.g. an undecodable or too short video: excluded from this metric
                row["notes"].append(f"{key}: {err}")
                s.video[key] = "failed"
    return s


def save_score(path: Path, s: ClipScore, fingerprint: str) -> None:
    """One clip's score as ``.npz`` (atomic): embeddings as float64 arrays, everything else as JSON."""
    arrays = {}
    for side in SIDES:
        for model, e in s.emb[side].items():
            arrays[f"{side}.{model}.embedding"] = e.embedding
            if e.logits is not None:
                arrays[f"{side}.{model}.logits"] = e.logits
    info = {"fingerprint": fingerprint, "row": s.row, "rejects": s.rejects, "gen_ok": s.gen_ok, "gt_ok": s.gt_ok,
            "gt_missing": s.gt_missing, "video": s.video, "models": {side: list(s.emb[side]) for side in SIDES}}
    arrays["info"] = np.frombuffer(json.dumps(info, sort_keys=True).encode("utf-8"), np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_score(path: Path, fingerprint: str | None = None) -> ClipScore | None:
    """The stored score, or None when absent, unreadable or of another fingerprint (to be recomputed)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(z["info"].tobytes().decode("utf-8"))
            if fingerprint is not None and info["fingerprint"] != fingerprint:
                return None
            emb = {side: {m: Embeddings(z[f"{side}.{m}.embedding"], z[f"{side}.{m}.logits"]
                                        if f"{side}.{m}.logits" in z else None)
                          for m in info["models"][side]} for side in SIDES}
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable (%s); the clip is scored again", path, e)
        return None
    return ClipScore(row=info["row"], rejects=info["rejects"], gen_ok=info["gen_ok"], gt_ok=info["gt_ok"],
                     gt_missing=info["gt_missing"], emb=emb, video=info["video"])
