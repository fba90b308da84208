"""Stage ``train``: fit the GPT-2 mapper on the feature cache (never a video), into ``<runs>/mapper``.

An interrupted run resumes from ``last/``. When the stage's fingerprint changes (new params, new features), the
previous run is kept aside as ``<runs>/mapper.<old fingerprint>`` and training starts afresh: nothing trained is
deleted. One process trains a run at a time: its lock ``<runs>/.mapper.lock`` is taken before anything in the run
folder is looked at, moved or written. Switching back to params whose run was kept brings that run back (finished:
nothing is retrained).
The ids trained on and validated on are written to ``train_ids.txt`` / ``val_ids.txt`` in the run; with
``save_every: k`` the per-epoch weights to ``epochs/epoch-NNNN/`` (read by the ``dynamics`` stage, lab/dynamics.py).

The stage's identity is what computes these outputs: the mapper, the training loop, the GPT-2 it starts from
(frozen/gpt2.py) and the features. Generation and scoring (the Fig. 3 curve) are the ``dynamics`` stage's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.config import TrainConfig, TrainRuntime
from v2a.dist import placement
from v2a.io import atomic_write_json, folder_lock, read_json
from v2a.schema import with_values

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
# The stage's schema (v2a/schema.py): TrainConfig's fields; those of TrainRuntime go under `runtime`.
Params, Runtime = TrainConfig, TrainRuntime


def agree(name: str, params: dict) -> list[str]:
    """``cavp_steps`` (the visual steps a clip gives the mapper: CAVP's or CLIP's frames, TimeChat upsampled to
    them) is the frames' clip grid's frame count; checked when the configuration loads, before any stage runs."""
    frames, steps = params.get("frames"), params[name].cavp_steps
    if frames is None or frames.grid.n_frames == steps:
        return []
    g = frames.grid
    return [f"stages.{name}.params.cavp_steps: {steps}, but the frames' clip grid gives {g.n_frames} frames a clip "
            f"(stages.frames.params: {g.fps} fps x {g.seconds:g} s); set cavp_steps: {g.n_frames}"]


def run_dir(ctx: StageContext) -> Path:
    return ctx.cfg.mapper_dir


def read_record(ctx: StageContext) -> dict | None:
    p = run_dir(ctx) / "_stage.json"
    if p.exists():
        return read_json(p)
    started = run_dir(ctx) / "_started.json"
    if started.exists():
        rec = read_json(started)
        return {**rec, "complete": False, "progress": "training started, not finished"}
    return None


def _set_aside(out: Path, fingerprint: str, force: bool) -> None:
    started = out / "_started.json"
    if not out.exists() or not any(out.iterdir()):
        return
    old = read_json(started).get("fingerprint", "old") if started.exists() else "old"
    if old == fingerprint and not force:
        return  # same run: resume it
    dest = out.with_name(f"{out.name}.{old}")
    n = 1
    while dest.exists():
        dest, n = out.with_name(f"{out.name}.{old}.{n}"), n + 1
    log.info("train: keeping the previous run as %s", dest)
    os.replace(out, dest)


def _bring_back(out: Path, fingerprint: str) -> None:
    """A run kept aside under this fingerprint becomes the current run again (it resumes or is already done)."""
    kept = out.with_name(f"{out.name}.{fingerprint}")
    if (out.exists() and any(out.iterdir())) or not (kept / "_started.json").exists():
        return
    if read_json(kept / "_started.json").get("fingerprint") == fingerprint:
        if out.exists():
            out.rmdir()
        log.info("train: the run kept as %s has these params and inputs: using it again", kept)
        os.replace(kept, out)


def train_config(ctx: StageContext) -> TrainConfig:
    """The stage's params and runtime (device, in_memory: not fingerprinted) as one TrainConfig: the one place this
    module reads ``ctx.params``."""
    return with_values(ctx.params, **ctx.runtime.model_dump())


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Before the stage starts: the pretrained GPT-2's files, keys and shapes (frozen/gpt2.py)."""
    cfg = train_config(ctx)
    if cfg.model != "full" or not cfg.pretrained or not Path(str(cfg.gpt2)).exists():
        return []  # tiny, random init, or a hub id / missing path (the generic check's)
    from frozen.gpt2 import preflight_gpt2

    return [("params.gpt2", msg) for msg in preflight_gpt2(cfg.gpt2, cfg.gpt2_subfolder)]


def run(ctx: StageContext) -> None:
    """Rank 0 takes the run's lock (``<runs>/.mapper.lock``, beside the run: setting the run aside cannot move it)
    before it looks at the run folder; only then does it decide to resume, set aside or bring back, and it holds the
    lock until the stage's record is written. A second training of the same run is refused, its folder untouched."""
    cfg = train_config(ctx)
    out = run_dir(ctx)
    if placement().rank != 0:
        _train(ctx, cfg, out)
        return
    with folder_lock(out, "the mapper run"):
        _set_aside(out, ctx.fingerprint.value, ctx.force)
        if not ctx.force:
            _bring_back(out, ctx.fingerprint.value)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "_started.json", {"fingerprint": ctx.fingerprint.value,
                                                  "components": ctx.fingerprint.components})
        summary = _train(ctx, cfg, out)
        atomic_write_json(out / "_stage.json", ctx.record(summary=summary))


def _train(ctx: StageContext, cfg: TrainConfig, out: Path) -> dict:
    from trainer import train

    upstream = {n: ctx.fingerprint.components["inputs"][n] for n in ctx.spec.needs}
    return train.run(cfg, cache=str(ctx.cfg.zarr_path), out_dir=str(out), resume=True, progress=ctx.progress,
                     upstream_fingerprints=upstream, train_ids=ctx.cfg.optional_path("train_ids"), locked=True)
