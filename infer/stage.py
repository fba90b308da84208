"""Stage ``generate``: every clip of one split of the feature cache -> wav, muxed video, spectrogram PNG.

Outputs go to ``<outputs>/generated/``; ``index.csv`` lists what was written. A clip whose ``<id>.json`` carries
the current fingerprint is skipped on rerun (resume); the others are (re)generated.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import BaseModel, Field

from infer.generate import ClipJob, GenerateParams, Generator, feature_names, mapper_checkpoint, source_video, streams
from pipeline import cache
from pipeline.framestore import load_clips
from v2a.dist import pick_device
from v2a.io import atomic_write_json, atomic_write_text, exclusive_lock, read_json

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Params = GenerateParams  # stages.generate.params (v2a/schema.py checks it when the configuration loads)


class Runtime(BaseModel):
    """``stages.generate.runtime`` (not fingerprinted)."""

    batch_size: Annotated[int, Field(ge=1)] = 4  # clips per AudioLDM-2 call
    device: str = "auto"  # auto | cpu | cuda | cuda:N


def out_dir(ctx: StageContext) -> Path:
    return ctx.cfg.path("outputs") / "generated"


def read_record(ctx: StageContext) -> dict | None:
    p = out_dir(ctx) / "_stage.json"
    return read_json(p) if p.exists() else None


def _done(out: Path, cid: str, fingerprint: str) -> bool:
    p = out / f"{cid}.json"
    return p.exists() and read_json(p).get("fingerprint") == fingerprint


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Before the stage starts: the AudioLDM-2 folder's components, UNet/VAE keys and shapes (infer/audioldm2.py)."""
    from infer.audioldm2 import preflight_pipeline

    if ctx.params.get("model", "full") != "full":
        return []
    return [("params.checkpoint", msg) for msg in preflight_pipeline(ctx.params.get("checkpoint"))]


def run(ctx: StageContext) -> None:
    p = GenerateParams.from_dict(ctx.params)
    out = out_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / ".lock", what=f"the generate output {out}"):
        (out / "_stage.json").unlink(missing_ok=True)
        root = cache.open_store(ctx.cfg.zarr_path, "r")
        meta = cache.read_meta(root)
        rows = np.flatnonzero((meta["status"] == "") & (meta["split"] == p.split))
        if p.max_clips:
            rows = rows[: p.max_clips]
        if len(rows) == 0:
            raise RuntimeError(f"the cache has no usable clips in split {p.split!r} (stages.generate.params.split)")
        todo = [int(i) for i in rows if ctx.force or not _done(out, str(meta["id"][i]), ctx.fingerprint.value)]
        log.info("generate: %d clips in split %r, %d to do", len(rows), p.split, len(todo))
        if todo:
            device = pick_device(ctx.runtime("device", "auto"))
            gen = Generator(p, mapper_checkpoint(ctx.cfg.path("runs") / "mapper", p.mapper), device=device,
                            batch_size=int(ctx.runtime("batch_size", 4)))
            _generate(ctx, gen, root, meta, todo, out)
        _index(out, [str(meta["id"][i]) for i in rows])
        atomic_write_json(out / "_stage.json", ctx.record(clips=len(rows)))
        log.info("generate: %d clips in %s (%d generated now, %d kept from before); list in %s", len(rows), out,
                 len(todo), len(rows) - len(todo), out / "index.csv")


def _generate(ctx: StageContext, gen: Generator, root, meta: dict, todo: list[int], out: Path) -> None:
    cavp, tc = streams(gen.spec, {n: root[f"{n}/emb"] for n in feature_names(gen.spec)})  # zarr arrays
    gen.check_features(None if cavp is None else cavp.shape[1:], None if tc is None else tc.shape[1:],
                       str(ctx.cfg.zarr_path))
    gt = {i: c.audio[: c.meta["audio_len"]] for i, c in load_clips(ctx.cfg.frames_dir, set(todo)).items()
          if c.meta["has_audio"]}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i in todo:
            jobs.append(ClipJob(
                id=str(meta["id"][i]),
                cavp=None if cavp is None else cavp[i], timechat=None if tc is None else tc[i],
                prompt=str(meta["label"][i]) or None, video=source_video(str(meta["source"][i]), Path(tmp)),
                ground_truth=gt.get(i), info={"row": i, "fingerprint": ctx.fingerprint.value,
                                              "source": str(meta["source"][i])}))
        gen.run(jobs, out, progress=ctx.progress)


def _index(out: Path, ids: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "prompt", "wav", "video", "png", "seconds"])
    for cid in ids:
        r = read_json(out / f"{cid}.json")
        w.writerow([cid, r.get("prompt") or "", r["wav"], r.get("video", ""), r["png"], r["seconds"]])
    atomic_write_text(out / "index.csv", buf.getvalue())
