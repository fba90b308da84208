"""Stage ``generate``: every clip of one split of the feature cache -> wav, muxed video, spectrogram PNG.

Outputs go to ``<outputs>/generated/``; ``index.csv`` lists what was written. A clip whose ``<id>.json`` carries
the current fingerprint is skipped on rerun (resume); the others are (re)generated.

Sharding: ``RANK``/``WORLD_SIZE`` (torchrun, SLURM; v2a/dist.py, given as ``ctx.rank``/``ctx.world_size``) split
the split's clips into batches of ``runtime.batch_size`` in row order, batch ``b`` going to rank ``b %
world_size``; every rank runs the same command. A batch is always generated whole, with the same clips whatever
the number of ranks or the point a run was interrupted at, so the union of the ranks' files is the same bytes as
a one-rank run. The last rank to finish writes ``index.csv`` and the stage record.
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

from infer.params import GenerateParams
from v2a.dist import pick_device
from v2a.io import atomic_write_json, atomic_write_text, exclusive_lock, read_json

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from infer.generate import Generator
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Params = GenerateParams  # stages.generate.params (v2a/schema.py checks it when the configuration loads)


class Runtime(BaseModel):
    """``stages.generate.runtime`` (not fingerprinted)."""

    batch_size: Annotated[int, Field(ge=1)] = 4  # clips per AudioLDM-2 call
    device: str = "auto"  # auto | cpu | cuda | cuda:N


def out_dir(ctx: StageContext) -> Path:
    return ctx.cfg.generated_dir


def read_record(ctx: StageContext) -> dict | None:
    out = out_dir(ctx)
    if (out / "_stage.json").exists():
        return read_json(out / "_stage.json")
    if (out / "_plan.json").exists():  # started, not complete (interrupted, or other ranks still at work)
        plan = read_json(out / "_plan.json")
        done = sum(_done(out, cid, plan["fingerprint"]) for cid in plan["ids"])
        return {"complete": False, "fingerprint": plan["fingerprint"], "components": plan["components"],
                "progress": f"{done}/{len(plan['ids'])} clips done"}
    return None


def _done(out: Path, cid: str, fingerprint: str) -> bool:
    p = out / f"{cid}.json"
    return p.exists() and read_json(p).get("fingerprint") == fingerprint


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Before the stage starts: the AudioLDM-2 folder's components, UNet/VAE keys and shapes (frozen/audioldm2.py)."""
    from infer.audioldm2 import preflight_pipeline

    if ctx.params.model != "full":
        return []
    return [("params.checkpoint", msg) for msg in preflight_pipeline(ctx.params.checkpoint)]


def run(ctx: StageContext) -> None:
    from infer.generate import Generator, mapper_checkpoint  # torch, diffusers: not when the config is checked
    from pipeline import cache  # zarr

    p: GenerateParams = ctx.params
    out = out_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    fp = ctx.fingerprint.value
    batch_size = ctx.runtime.batch_size
    with exclusive_lock(out / f".lock.rank{ctx.rank}", what=f"the generate output {out} (rank {ctx.rank})"):
        root = cache.open_store(ctx.cfg.zarr_path, "r")
        meta = cache.read_meta(root)
        rows = [int(i) for i in np.flatnonzero((meta["status"] == "") & (meta["split"] == p.split))]
        if p.max_clips:
            rows = rows[: p.max_clips]
        if len(rows) == 0:
            have = dict(zip(*np.unique([str(s) for s in meta["split"][meta["status"] == ""]], return_counts=True)))
            raise RuntimeError(f"the cache has no usable clips in split {p.split!r} (stages.generate.params.split); "
                               f"usable clips per split: {', '.join(f'{k} {v}' for k, v in have.items()) or 'none'}")
        ids = [str(meta["id"][i]) for i in rows]
        (out / "_stage.json").unlink(missing_ok=True)  # after the checks: a refused run leaves the last one recorded
        atomic_write_json(out / "_plan.json", {"fingerprint": fp, "components": ctx.fingerprint.components,
                                               "ids": ids})
        batches = [rows[b: b + batch_size] for b in range(0, len(rows), batch_size)]
        mine = [bt for j, bt in enumerate(batches) if j % ctx.world_size == ctx.rank
                and (ctx.force or not all(_done(out, str(meta["id"][i]), fp) for i in bt))]
        todo = [i for bt in mine for i in bt]
        log.info("generate: %d clips in split %r in %d batches; rank %d/%d has %d batches (%d clips) to do",
                 len(rows), p.split, len(batches), ctx.rank, ctx.world_size, len(mine), len(todo))
        if todo:
            gen = Generator(p, mapper_checkpoint(ctx.cfg.mapper_dir, p.mapper),
                            device=pick_device(ctx.runtime.device), batch_size=batch_size)
            _generate(ctx, gen, root, meta, todo, out)
    with exclusive_lock(out / ".lock.finalize", what=f"the generate output {out}", wait=True):
        missing = [cid for cid in ids if not _done(out, cid, fp)]
        if missing:
            log.warning("generate: %d of %d clips are not done yet (other ranks?): %s...; the rank that finishes "
                        "last writes index.csv", len(missing), len(ids), missing[:3])
            return
        _index(out, ids)
        atomic_write_json(out / "_stage.json", ctx.record(clips=len(ids)))
        log.info("generate: %d clips in %s (%d generated by this rank now); list in %s", len(ids), out, len(todo),
                 out / "index.csv")


def _generate(ctx: StageContext, gen: Generator, root, meta: dict, todo: list[int], out: Path) -> None:
    from infer.generate import cache_clips

    with tempfile.TemporaryDirectory() as tmp:
        clips = cache_clips(gen, root, meta, todo, ctx.cfg.frames_dir, Path(tmp), str(ctx.cfg.zarr_path),
                            info={"fingerprint": ctx.fingerprint.value})
        gen.run(clips, out, progress=ctx.progress)


def _index(out: Path, ids: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "prompt", "wav", "video", "png", "seconds"])
    for cid in ids:
        r = read_json(out / f"{cid}.json")
        w.writerow([cid, r.get("prompt") or "", r["wav"], r.get("video", ""), r["png"], r["seconds"]])
    atomic_write_text(out / "index.csv", buf.getvalue())
