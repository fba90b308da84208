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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

from scoring import metrics as M
from scoring.audio import EVAL_SR, ClipAudio
from scoring.embedders import AudioEmbedder, VideoAudioScorer, build_embedders
from scoring.embedders import build_video_scorers
from scoring.report import PAPER_ROW, TABLE_COLUMNS, write_outputs
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


@dataclass
class EvalParams:
    model: Literal["full", "tiny", "random-full"] = "full"  # random-full: released sizes, random weights
    seed: int = 0
    seconds: float = 8.0
    panns_ckpt: str | None = None
    vggish_ckpt: str | None = None
    passt_ckpt: str | None = None
    imagebind_ckpt: str | None = None
    synchformer_ckpt: str | None = None
    is_splits: int = M.IS_SPLITS
    gallery: bool = True
    gallery_max_clips: int = 50
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> "EvalParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"evaluate.params: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * EVAL_SR))


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


def _embed_all(embedders: dict[str, AudioEmbedder], audio: dict[str, ClipAudio], side: str,
               rows: dict[str, dict]) -> dict[str, dict]:
    """{model: {clip_id: Embeddings}} for clips whose embeddings are finite; failures noted in rows."""
    out: dict[str, dict] = {name: {} for name in embedders}
    for cid, wav in audio.items():
        for name, emb in embedders.items():
            try:
                e = emb.embed(wav)
            except ValueError as err:
                rows[cid]["notes"].append(f"{name} {side}: {err}")
                continue
            if not np.isfinite(e.embedding).all() or (e.logits is not None and not np.isfinite(e.logits).all()):
                rows[cid]["notes"].append(f"{name} {side}: NaN/inf embedding, excluded from {name} metrics")
                continue
            out[name][cid] = e
    return out


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


def _video_metric(key: str, scorer: VideoAudioScorer | None, reason: str | None, pairs: list[ClipPair],
                  gen_audio: dict, rows: dict, exclude_short: bool) -> dict:
    if scorer is None:
        return _metric("skipped", n_clips=0, reason=reason or "no scorer")
    ids = [p.clip_id for p in pairs if p.clip_id in gen_audio and p.video is not None]
    n_no_video = sum(1 for p in pairs if p.clip_id in gen_audio and p.video is None)
    n_short = 0
    if exclude_short:
        n_short = sum(1 for c in ids if rows[c]["short"])
        ids = [c for c in ids if not rows[c]["short"]]
    video = {p.clip_id: Path(p.video) for p in pairs if p.video is not None}
    vals = []
    n_failed = 0
    for c in ids:
        try:
            v = float(scorer(video[c], gen_audio[c]))
        except ValueError as err:  # e.g. an undecodable or too short video: excluded from this metric
            rows[c]["notes"].append(f"{key}: {err}")
            n_failed += 1
            continue
        rows[c][key] = v
        vals.append(v)
    extra = {"n_clips": len(vals), "n_no_video": n_no_video}
    if n_failed:
        extra["n_failed"] = n_failed
    if exclude_short:
        extra["n_excluded_short"] = n_short
    if not vals:
        return _metric("skipped", reason="no clip with a video and >= 8 s of audio", **extra)
    return _metric("ok", float(np.mean(vals)), **extra)


def evaluate_pairs(p: EvalParams, pairs: list[ClipPair], embedders: dict[str, AudioEmbedder],
                   scorers: dict[str, VideoAudioScorer], skip_reasons: dict[str, str]) -> tuple[dict, list[dict]]:
    n = p.n_samples
    rows = {c.clip_id: {"clip_id": c.clip_id, "notes": [], "short": False} for c in pairs}
    gen_audio, gt_audio, rejects = {}, {}, []
    # 1. Load and crop both sides.
    for c in pairs:
        r = rows[c.clip_id]
        gen, r["gen_seconds"], why_gen = _load_side(c.gen, n, "generated audio")
        gt, r["gt_seconds"], why_gt = _load_side(c.gt, n, "ground truth")
        for why in (why_gen, why_gt):
            if why:
                r["notes"].append(why)
                rejects.append({"clip_id": c.clip_id, "reason": why})
        if gen is not None:
            gen_audio[c.clip_id] = gen
            r["short"] = -(-EVAL_SR * gen.channels.shape[1] // gen.sr) < n  # its length once resampled to 16 kHz
        if gt is not None:
            gt_audio[c.clip_id] = gt
    # 2. Embeddings.
    emb_gen = _embed_all(embedders, gen_audio, "generated", rows)
    emb_gt = _embed_all(embedders, gt_audio, "ground truth", rows)
    for cid, e in emb_gen["vggish"].items():
        rows[cid]["vggish_examples"] = e.embedding.shape[0]
    # 3. Metrics.
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
    res["ib_score"] = _video_metric("ib_score", scorers.get("ib_score"), skip_reasons.get("ib_score"), pairs,
                                    gen_audio, rows, exclude_short=False)
    res["desync"] = _video_metric("desync", scorers.get("desync"), skip_reasons.get("desync"), pairs,
                                  gen_audio, rows, exclude_short=True)
    for r in rows.values():
        r["status"] = "ok" if not r["notes"] else "partial" if r["clip_id"] in gen_audio else "rejected"
        r["reason"] = "; ".join(r.pop("notes"))
    counts = {"clips": len(pairs), "generated_ok": len(gen_audio), "ground_truth_ok": len(gt_audio),
              "missing_ground_truth": sum(1 for c in pairs if c.gt is None),
              "short": sum(1 for r in rows.values() if r["short"])}
    return {"metrics": res, "counts": counts, "rejects": rejects}, list(rows.values())


def run(params: Any, *, pairs: Iterable | None = None, out_dir: str | Path | None = None,
        embedders: dict[str, AudioEmbedder] | None = None,
        video_scorers: dict[str, VideoAudioScorer] | None = None, record: dict | None = None) -> dict:
    """Evaluate ``pairs`` and write ``metrics.json``, ``per_clip.csv``, ``table.md`` (and a gallery) to ``out_dir``.

    ``params`` is the stage's params dict (see :class:`EvalParams`); the ``evaluate`` stage (scoring/stage.py)
    builds the pairs from the generate stage's outputs and the cached ground truth. ``embedders``/``video_scorers`` override the ones built from params (tests, other backends); ``record``
    (the stage runner's fingerprint record) is merged into metrics.json.
    """
    if pairs is None or out_dir is None:
        raise ValueError("run(params, pairs=..., out_dir=...) needs both pairs and out_dir")
    p = EvalParams.from_dict(dict(params))
    pair_list = as_pairs(pairs)
    embedders = embedders or build_embedders(asdict(p), device=p.device)
    scorers, reasons = build_video_scorers(asdict(p))
    if video_scorers:
        scorers.update(video_scorers)
        reasons = {k: v for k, v in reasons.items() if k not in video_scorers}
    log.info("evaluating %d clips (%s models)", len(pair_list), p.model)
    result, rows = evaluate_pairs(p, pair_list, embedders, scorers, reasons)
    for key, m in result["metrics"].items():
        if m["status"] != "ok":
            log.warning("%s %s: %s", key, m["status"], m.get("reason"))
    result.update({**(record or {}), "complete": True}, params=asdict(p), paper_mfm_mapper=PAPER_ROW,
                  table_columns=[c for c, _ in TABLE_COLUMNS])
    out_dir = Path(out_dir)
    if p.gallery:
        from scoring.gallery import build_gallery

        scores = {r["clip_id"]: r for r in rows}
        gal = build_gallery(pair_list[: p.gallery_max_clips], out_dir / "gallery", scores=scores)
        result["gallery"] = str(gal)
    result["files"] = {k: str(v) for k, v in write_outputs(out_dir, result, rows).items()}
    return result
