"""Stage ``evaluate``: the generate stage's clips against their ground truth, with the av-benchmark metrics; writes
``metrics.json``, ``per_clip.csv``, ``table.md`` and an HTML gallery (frames strip, spectrograms, players, the muxed
video) to ``<outputs>/evaluation``.

The ground truth is read as av-benchmark reads its ground-truth folder: the source file itself, whole, at its own
rate, every channel (PaSST then gets real 32 kHz audio, content up to 16 kHz). When the source is no longer on disk
(or lies inside a webdataset tar) the frames stage's cached audio is used instead: 16 kHz, channel 0, first 10 s.

Each clip is scored alone first (embeddings, IB-score, DeSync: ``evaluation/clips/<id>.npz``, with the stage
fingerprint; a rerun keeps those that match), then the set's metrics are computed from those files. ``RANK``/
``WORLD_SIZE`` (torchrun, SLURM) give each rank every ``world_size``-th clip of ``index.csv``; the rank that
finishes last computes the metrics and writes the report: the same bytes as a one-rank run.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel
from tqdm import tqdm

from pipeline.framestore import load_clips
from scoring.params import EvalParams
from v2a.dist import pick_device
from v2a.io import atomic_write_json, exclusive_lock, read_json
from v2a.logfmt import pairs
from v2a.schema import with_values

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from scoring.run import ClipPair
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Params = EvalParams  # the stage's schema (v2a/schema.py); params.device picks the device


class Runtime(BaseModel):
    """``stages.evaluate.runtime``: none."""


def out_dir(ctx: StageContext) -> Path:
    return ctx.cfg.evaluation_dir


def read_record(ctx: StageContext) -> dict | None:
    out = out_dir(ctx)
    if (out / "metrics.json").exists():
        rec = read_json(out / "metrics.json")
        return {k: rec.get(k) for k in ("fingerprint", "components", "complete")}
    if (out / "_plan.json").exists():
        from scoring.clips import load_score  # torch (scoring.embedders): only for a started evaluation

        plan = read_json(out / "_plan.json")
        done = sum(load_score(_score_path(out, c), plan["fingerprint"]) is not None for c in plan["ids"])
        return {"complete": False, "fingerprint": plan["fingerprint"], "components": plan["components"],
                "progress": f"{done}/{len(plan['ids'])} clips scored"}
    return None


def _ground_truth(c):
    """The source file when it is on disk (av-benchmark reads the original), else the cached 16 kHz audio."""
    src = str(c.meta.get("source") or "")
    if src and "::" not in src and Path(src).is_file():
        return Path(src)
    return c.audio[: c.meta["audio_len"]], 16000


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Before the stage starts: every evaluation checkpoint's keys and shapes (scoring/preflight.py)."""
    from scoring.preflight import preflight_eval

    return preflight_eval(ctx.params)


def _score_path(out: Path, cid: str) -> Path:
    return out / "clips" / f"{cid}.npz"


def _pairs(ctx: StageContext, generated: list[dict], want_frames: bool) -> list[ClipPair]:
    """ClipPairs of the generated clips: their wav and video, and the cached ground truth (and frames)."""
    from pipeline import cache  # zarr
    from scoring.run import ClipPair

    gen_dir = ctx.cfg.generated_dir
    meta = cache.read_meta(cache.open_store(ctx.cfg.zarr_path, "r"))
    row_of = {str(cid): i for i, cid in enumerate(meta["id"])}
    rows = {row_of[g["id"]] for g in generated if g["id"] in row_of}
    clips = load_clips(ctx.cfg.frames_dir, rows, want_frames=want_frames, want_audio=True)
    pairs = []
    for g in generated:
        i = row_of.get(g["id"])
        c = clips.get(i) if i is not None else None
        usable = c is not None and c.meta["has_audio"] and not c.meta["audio_silent"]
        gt = _ground_truth(c) if usable else None
        frames = c.frames[: max(1, c.meta["n_frames"])] if c is not None and want_frames else None
        video = gen_dir / g["video"] if g.get("video") else None
        label = str(meta["label"][i]) if i is not None else None
        pairs.append(ClipPair(g["id"], gt, gen_dir / g["wav"], video, frames, label=label or None,
                              prompt=g.get("prompt") or None))
    return pairs


def run(ctx: StageContext) -> None:
    from scoring.clips import load_score  # torch: not when the configuration is checked
    from scoring.embedders import video_scorer_reasons
    from scoring.run import aggregate, finish

    index = ctx.cfg.generated_dir / "index.csv"
    if not index.exists():
        raise RuntimeError(f"{index.parent} has no index.csv: run the generate stage first (make generate)")
    with open(index, newline="", encoding="utf-8") as f:
        generated = list(csv.DictReader(f))
    if not generated:
        raise RuntimeError(f"{index} lists no generated clips: nothing to evaluate (rerun the generate stage)")
    p: EvalParams = ctx.params
    out, fp = out_dir(ctx), ctx.fingerprint.value
    ids = [g["id"] for g in generated]
    with exclusive_lock(out / f".lock.rank{ctx.rank}", what=f"the evaluation output {out} (rank {ctx.rank})"):
        (out / "metrics.json").unlink(missing_ok=True)  # stale or forced: this run writes a new one
        atomic_write_json(out / "_plan.json", {"fingerprint": fp, "components": ctx.fingerprint.components,
                                               "ids": ids})
        mine = [g for j, g in enumerate(generated) if j % ctx.world_size == ctx.rank
                and (ctx.force or load_score(_score_path(out, g["id"]), fp) is None)]
        log.info("evaluate: %d clips; rank %d/%d scores %d", len(ids), ctx.rank, ctx.world_size, len(mine))
        if mine:
            _score(ctx, p, _pairs(ctx, mine, want_frames=False), out)
    with exclusive_lock(out / ".lock.finalize", what=f"the evaluation output {out}", wait=True):
        scored = [load_score(_score_path(out, cid), fp) for cid in ids]
        missing = [cid for cid, s in zip(ids, scored) if s is None]
        if missing:
            log.warning("evaluate: %d of %d clips are not scored yet (other ranks?): %s...; the rank that "
                        "finishes last writes the report", len(missing), len(ids), missing[:3])
            return
        reasons = video_scorer_reasons(p)
        result, rows = aggregate(p, scored, {"ib_score", "desync"} - set(reasons), reasons)
        if sum(s.gt_missing for s in scored):
            log.warning("evaluate: %d of %d clips have no usable ground-truth audio; they are reported, not "
                        "scored", sum(s.gt_missing for s in scored), len(ids))
        shown_pairs = _pairs(ctx, generated[: p.gallery_max_clips], want_frames=True) if p.gallery else []
        result = finish(p, shown_pairs, result, rows, out, ctx.record(experiment=ctx.cfg.experiment))
    shown = {k: (m.get("value") if m.get("status") == "ok" else m.get("status")) for k, m in result["metrics"].items()}
    log.info("evaluate: %s -> %s", pairs(shown), out / "table.md")


def _score(ctx: StageContext, p: EvalParams, pairs: list[ClipPair], out: Path) -> None:
    from scoring.clips import save_score, score_clip
    from scoring.embedders import build_embedders, build_video_scorers
    from scoring.run import _load_side

    device = str(pick_device(p.device))  # cuda: this process's GPU (cuda:<local rank>)
    on_device = with_values(p, device=device)
    embedders = build_embedders(on_device, device=device)
    scorers, _ = build_video_scorers(on_device)
    for pair in tqdm(pairs, unit="clip", desc="evaluate", disable=not ctx.progress):
        save_score(_score_path(out, pair.clip_id), score_clip(pair, p.n_samples, embedders, scorers, _load_side),
                   ctx.fingerprint.value)
