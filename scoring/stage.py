"""Stage ``evaluate``: the generate stage's clips against their ground truth, with the av-benchmark metrics; writes
``metrics.json``, ``per_clip.csv``, ``table.md`` and an HTML gallery (frames strip, spectrograms, players, the muxed
video) to ``<outputs>/evaluation``.

The ground truth is read as av-benchmark reads its ground-truth folder: the source file itself, whole, at its own
rate, every channel (PaSST then gets real 32 kHz audio, content up to 16 kHz). When the source is no longer on disk
(or lies inside a webdataset tar) the frames stage's cached audio is used instead: 16 kHz, channel 0, first 10 s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from scoring.run import ClipPair, EvalParams
from scoring.run import run as evaluate_pairs
from pipeline import cache
from pipeline.framestore import load_clips
from v2a.io import read_json

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Params = EvalParams  # the stage's schema (v2a/schema.py); params.device picks the device


class Runtime(BaseModel):
    """``stages.evaluate.runtime``: none."""


def out_dir(ctx: StageContext) -> Path:
    return ctx.cfg.path("outputs") / "evaluation"


def read_record(ctx: StageContext) -> dict | None:
    p = out_dir(ctx) / "metrics.json"
    if not p.exists():
        return None
    rec = read_json(p)
    return {k: rec.get(k) for k in ("fingerprint", "components", "complete")}


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


def run(ctx: StageContext) -> None:
    gen_dir = ctx.cfg.path("outputs") / "generated"
    index = gen_dir / "index.csv"
    if not index.exists():
        raise RuntimeError(f"{gen_dir} has no index.csv: run the generate stage first (make generate)")
    meta = cache.read_meta(cache.open_store(ctx.cfg.zarr_path, "r"))
    row_of = {str(cid): i for i, cid in enumerate(meta["id"])}
    import csv

    with open(index, newline="", encoding="utf-8") as f:
        generated = list(csv.DictReader(f))
    rows = {row_of[g["id"]] for g in generated if g["id"] in row_of}
    clips = load_clips(ctx.cfg.frames_dir, rows, want_frames=True, want_audio=True)
    pairs = []
    for g in generated:
        i = row_of.get(g["id"])
        c = clips.get(i) if i is not None else None
        usable = c is not None and c.meta["has_audio"] and not c.meta["audio_silent"]
        gt = _ground_truth(c) if usable else None
        frames = c.frames[: max(1, c.meta["n_frames"])] if c is not None else None
        video = gen_dir / g["video"] if g.get("video") else None
        label = str(meta["label"][i]) if i is not None else None
        pairs.append(ClipPair(g["id"], gt, gen_dir / g["wav"], video, frames, label=label or None,
                              prompt=g.get("prompt") or None))
    missing = sum(p.gt is None for p in pairs)
    if missing:
        log.warning("evaluate: %d of %d clips have no usable ground-truth audio; they are reported, not scored",
                    missing, len(pairs))
    result = evaluate_pairs(ctx.params, pairs=pairs, out_dir=out_dir(ctx),
                            record=ctx.record(experiment=ctx.cfg.experiment))
    shown = ", ".join(f"{k} {m['value']:.5g}" if m.get("status") == "ok" else f"{k} {m.get('status')}"
                      for k, m in result["metrics"].items())
    log.info("evaluate: %s -> %s", shown, out_dir(ctx) / "table.md")
