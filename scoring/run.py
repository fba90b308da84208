"""Evaluation stage: generated vs ground-truth audio -> the paper's metrics, per-clip scores, table, gallery.

Input: ``pairs``, one per clip: a :class:`ClipPair`, a tuple ``(clip_id, gt, gen[, video[, frames]])`` or a dict
with those keys. ``gt``/``gen`` are an audio (or video) file path, a 16 kHz mono array or ``(array, sample_rate)``;
``gt`` may be None (reported as missing). ``pairs_from_folders`` builds them from ``<outputs>/<clip_id>.wav`` and a
ground-truth folder or callable.

Protocol (av-benchmark's, scoring/audio.py): each file is read whole, at its own rate, all channels; every network
then takes what av-benchmark gives it: PANNs/VGGish/PaSST/Synchformer the first 8 s (after resampling), ImageBind
the whole file (its three 2 s clips spread over the file, not over the first 8 s). A clip shorter than 8 s is kept
for FD/KL/IS, flagged ``short`` and excluded from DeSync (counted). Missing or unreadable audio and NaN embeddings
exclude the clip from the affected metrics with a reason in ``rejects`` and in the CSV. Every metric records the
clips it used.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from scoring import metrics as M
from scoring.audio import EVAL_SR, ClipAudio
from scoring.clips import VIDEO_METRICS, ClipScore, score_clip
from scoring.embedders import AudioEmbedder, VideoAudioScorer, build_embedders
from scoring.embedders import build_video_scorers
from scoring.params import EvalParams  # defined there (light, for the config check); scoring.run.EvalParams
from scoring.report import PAPER_ROW, TABLE_COLUMNS, random_weights, system_label, write_outputs
from v2a.io import check_clip_id

log = logging.getLogger(__name__)


@dataclass
class ClipPair:
    clip_id: str
    gt: Any  # path | array (16 kHz) | (array, sr) | None
    gen: Any
    video: str | Path | None = None
    frames: Any = None  # list of image paths, or uint8 array (T, H, W, 3)
    label: str | None = None  # the clip's class (shown in the gallery)
    prompt: str | None = None  # the text prompt it was generated with


def as_pairs(pairs: Iterable) -> list[ClipPair]:
    out, seen = [], set()
    for p in pairs:
        if isinstance(p, dict):
            p = ClipPair(**p)
        elif isinstance(p, (tuple, list)):
            p = ClipPair(*p)
        if not isinstance(p, ClipPair):
            raise ValueError(f"a pair must be a ClipPair, tuple or dict, got {type(p).__name__}")
        check_clip_id(p.clip_id)
        if p.clip_id in seen:
            raise ValueError(f"clip id {p.clip_id!r} appears twice in pairs")
        seen.add(p.clip_id)
        out.append(p)
    if not out:
        raise ValueError("pairs is empty: nothing to evaluate")
    return out


def pairs_from_folders(gen_dir: str | Path, gt: str | Path | Callable[[str], Any], *,
                       video_dir: str | Path | None = None) -> list[ClipPair]:
    """One pair per ``<gen_dir>/<clip_id>.wav``; ``gt`` a folder of ``<clip_id>.wav`` or ``clip_id -> audio``."""
    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise FileNotFoundError(f"generated audio folder {gen_dir} does not exist")
    pairs = []
    for wav in sorted(gen_dir.glob("*.wav")):
        cid = wav.stem
        if callable(gt):
            g = gt(cid)
        else:
            g = Path(gt) / f"{cid}.wav"
            g = g if g.is_file() else None
        video = None
        if video_dir is not None and (Path(video_dir) / f"{cid}.mp4").is_file():
            video = Path(video_dir) / f"{cid}.mp4"
        pairs.append(ClipPair(cid, g, wav, video))
    return pairs


def _load_side(src: Any, n: int, what: str) -> tuple[ClipAudio | None, float, str | None]:
    """-> (the clip's audio as read from its file or None, duration in s, reason when unusable)."""
    if src is None:
        return None, 0.0, f"missing {what}"
    try:
        x = ClipAudio.from_source(src)
    except (OSError, RuntimeError, ValueError) as e:
        return None, 0.0, f"cannot read {what}: {e}"
    dur = x.duration
    if not np.isfinite(x.channels).all():
        return None, dur, f"{what} contains NaN/inf samples"
    if dur * EVAL_SR < 1024:
        return None, dur, f"{what} is too short ({x.channels.shape[1]} samples at {x.sr} Hz)"
    return x, dur, None


def _metric(status: str, value: float | None = None, **extra) -> dict:
    return {"status": status, "value": value, **extra}


def _fd(gen: dict, gt: dict, stack: Callable) -> dict:
    n_gen, n_gt = len(gen), len(gt)
    if n_gen < 2 or n_gt < 2:
        return _metric("skipped", n_gen=n_gen, n_gt=n_gt, reason="needs at least 2 clips on each side")
    a, b = stack(gen.values()), stack(gt.values())  # (rows, D): one row per clip, VGGish one per 0.96 s
    counts = {"n_gen": n_gen, "n_gt": n_gt, "n_gen_rows": int(a.shape[0]), "n_gt_rows": int(b.shape[0])}
    try:
        r = M.compute_fd(a, b)
    except M.FrechetDistanceError as e:
        return _metric("failed", reason=str(e), **counts)
    note = "covariances regularised with 1e-6*I" if r.retried else None
    return _metric("ok", r.value, retried=r.retried, note=note, **counts)


def _kl(gen: dict, gt: dict, key: str, rows: dict) -> dict:
    ids = [c for c in gen if c in gt]
    if not ids:
        return _metric("skipped", n_clips=0, reason="no clip has both generated and ground-truth logits")
    per = M.kl_per_clip(np.stack([gen[c].logits for c in ids]), np.stack([gt[c].logits for c in ids]))
    for c, v in zip(ids, per):
        rows[c][key] = float(v)
    return _metric("ok", float(per.mean()), n_clips=len(ids))


def _video_metric(key: str, present: bool, reason: str | None, scored: list[ClipScore],
                  exclude_short: bool) -> dict:
    if not present:
        return _metric("skipped", n_clips=0, reason=reason or "no scorer")
    status = [s.video.get(key) for s in scored]
    vals = [s.row[key] for s, st in zip(scored, status) if st == "ok"]
    extra = {"n_clips": len(vals), "n_no_video": status.count("no_video")}
    if status.count("failed"):
        extra["n_failed"] = status.count("failed")
    if exclude_short:
        extra["n_excluded_short"] = status.count("short")
    if not vals:
        return _metric("skipped", reason="no clip with a video and >= 8 s of audio", **extra)
    return _metric("ok", float(np.mean(vals)), **extra)


def aggregate(p: EvalParams, scored: list[ClipScore], scorer_names: set[str],
              skip_reasons: dict[str, str]) -> tuple[dict, list[dict]]:
    """The set's metrics from its clips' scores (in pair order); returns (result, per-clip rows)."""
    rows = {s.row["clip_id"]: {**s.row, "notes": list(s.row["notes"])} for s in scored}
    models = sorted({m for s in scored for side in s.emb.values() for m in side})
    emb_gen = {m: {s.row["clip_id"]: s.emb["gen"][m] for s in scored if m in s.emb["gen"]} for m in models}
    emb_gt = {m: {s.row["clip_id"]: s.emb["gt"][m] for s in scored if m in s.emb["gt"]} for m in models}
    for m in ("panns", "passt", "vggish"):
        emb_gen.setdefault(m, {}), emb_gt.setdefault(m, {})
    vec = lambda es: np.stack([e.embedding for e in es])  # noqa: E731  (N, D)
    cat = lambda es: np.concatenate([e.embedding for e in es])  # noqa: E731  (sum N_ex, D)
    res = {
        "fd_passt": _fd(emb_gen["passt"], emb_gt["passt"], vec),
        "fd_panns": _fd(emb_gen["panns"], emb_gt["panns"], vec),
        "fd_vgg": _fd(emb_gen["vggish"], emb_gt["vggish"], cat),
        "kl_panns": _kl(emb_gen["panns"], emb_gt["panns"], "kl_panns", rows),
        "kl_passt": _kl(emb_gen["passt"], emb_gt["passt"], "kl_passt", rows),
    }
    logits = [e.logits for e in emb_gen["panns"].values()]
    try:
        mean, std = M.inception_score(np.stack(logits) if logits else np.zeros((0, 1)), splits=p.is_splits)
        res["is_panns"] = _metric("ok", mean, std=std, n_clips=len(logits), splits=p.is_splits)
    except ValueError as e:
        res["is_panns"] = _metric("skipped", n_clips=len(logits), reason=str(e))
    for key, exclude_short in VIDEO_METRICS:
        res[key] = _video_metric(key, key in scorer_names, skip_reasons.get(key), scored, exclude_short)
    gen_ok = {s.row["clip_id"] for s in scored if s.gen_ok}
    for r in rows.values():
        r["status"] = "ok" if not r["notes"] else "partial" if r["clip_id"] in gen_ok else "rejected"
        r["reason"] = "; ".join(r.pop("notes"))
    counts = {"clips": len(scored), "generated_ok": len(gen_ok), "ground_truth_ok": sum(s.gt_ok for s in scored),
              "missing_ground_truth": sum(s.gt_missing for s in scored),
              "short": sum(1 for r in rows.values() if r["short"])}
    rejects = [r for s in scored for r in s.rejects]
    return {"metrics": res, "counts": counts, "rejects": rejects}, list(rows.values())


def evaluate_pairs(p: EvalParams, pairs: list[ClipPair], embedders: dict[str, AudioEmbedder],
                   scorers: dict[str, VideoAudioScorer], skip_reasons: dict[str, str]) -> tuple[dict, list[dict]]:
    scored = [score_clip(c, p.n_samples, embedders, scorers, _load_side) for c in pairs]
    return aggregate(p, scored, set(scorers), skip_reasons)


def finish(p: EvalParams, pair_list: list[ClipPair], result: dict, rows: list[dict], out_dir: str | Path,
           record: dict | None = None) -> dict:
    """Log what was skipped, then write metrics.json, per_clip.csv, table.md and the gallery."""
    for key, m in result["metrics"].items():
        if m["status"] != "ok":
            log.warning("%s %s: %s", key, m["status"], m.get("reason"))
    result.update({**(record or {}), "complete": True}, params=asdict(p), paper_mfm_mapper=PAPER_ROW,
                  table_columns=[c for c, _ in TABLE_COLUMNS])
    out_dir = Path(out_dir)
    if p.gallery:
        from scoring.gallery import build_gallery

        scores = {r["clip_id"]: r for r in rows}
        mark = random_weights(p.model)
        title = f"Samples: {system_label(result)}" + (f"; scores with {mark}" if mark else "")
        gal = build_gallery(pair_list[: p.gallery_max_clips], out_dir / "gallery", scores=scores, title=title)
        result["gallery"] = str(gal)
    result["files"] = {k: str(v) for k, v in write_outputs(out_dir, result, rows).items()}
    return result


def run(params: Any, *, pairs: Iterable | None = None, out_dir: str | Path | None = None,
        embedders: dict[str, AudioEmbedder] | None = None,
        video_scorers: dict[str, VideoAudioScorer] | None = None, record: dict | None = None) -> dict:
    """Evaluate ``pairs`` and write ``metrics.json``, ``per_clip.csv``, ``table.md`` (and a gallery) to ``out_dir``.

    ``params``: the stage's :class:`EvalParams` (or a mapping of its fields, checked here); the ``evaluate`` stage (scoring/stage.py)
    builds the pairs from the generate stage's outputs and the cached ground truth. ``embedders``/``video_scorers`` override the ones built from params (tests, other backends); ``record``
    (the stage runner's fingerprint record) is merged into metrics.json.
    """
    if pairs is None or out_dir is None:
        raise ValueError("run(params, pairs=..., out_dir=...) needs both pairs and out_dir")
    p = params if isinstance(params, EvalParams) else EvalParams.from_dict(dict(params))
    pair_list = as_pairs(pairs)
    embedders = embedders or build_embedders(p, device=p.device)
    scorers, reasons = build_video_scorers(p)
    if video_scorers:
        scorers.update(video_scorers)
        reasons = {k: v for k, v in reasons.items() if k not in video_scorers}
    log.info("evaluating %d clips (%s models)", len(pair_list), p.model)
    result, rows = evaluate_pairs(p, pair_list, embedders, scorers, reasons)
    return finish(p, pair_list, result, rows, out_dir, record)
