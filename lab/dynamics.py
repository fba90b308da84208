"""Stage ``dynamics`` (paper Fig. 3): the train run's per-epoch weights -> generate a fixed validation subset with each,
score it, draw IB-score, DeSync and FD_PaSST over epochs.

The train stage keeps ``<run>/epochs/epoch-NNNN/`` after epochs k, 2k, ... and the last when
``stages.train.params.save_every: k`` (trainer/checkpoint.py); that is all training does for the curve, so editing
generation or scoring never makes ``train`` stale. This stage (``v2a run dynamics``; not part of the evaluate chain)
reads those weights and, for each epoch, generates ``clips`` validation clips (a seeded choice among the run's
``val_ids.txt``, the same clips at every epoch) and scores them with the evaluate protocol.

Its identity: its own params (``clips``, ``seed``), the settings of the stages it ``uses`` (generate's and
evaluate's params and checkpoints: each point generates and scores exactly as those stages do, the gallery left
out), its code (this module, hence infer/ and scoring/), and the train stage's fingerprint (its input). Its outputs, in ``<run>/dynamics/`` (so they move aside
with their run when train starts afresh): ``epoch-NNNN/`` per point (wavs, muxed videos, spectrograms,
``metrics.json``, ``per_clip.csv``), the curve ``dynamics.csv`` and ``dynamics.png``, and ``_stage.json`` (last).
A point whose ``metrics.json`` carries the current fingerprint is not recomputed (a rerun resumes).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infer.params import GenerateParams
from scoring.params import EvalParams
from v2a.io import atomic_write_json, atomic_write_text, exclusive_lock, folder_lock, read_json
from v2a.schema import with_values

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from infer.generate import Generator
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
WRITES = ("runs",)  # its points go inside the train run (<runs>/mapper/dynamics): the preflight checks that folder

CURVE = [("ib_score", "IB-score (higher is better)"), ("desync", "DeSync (lower is better)"),
         ("fd_passt", "FD_PaSST (lower is better)")]


class Params(BaseModel):
    """``stages.dynamics.params`` (fingerprinted, with the generate and evaluate stages' settings: ``uses``)."""

    model_config = ConfigDict(extra="forbid")

    clips: Annotated[int, Field(ge=1)] = 32  # validation clips per point (the same ones at every epoch)
    seed: int = 0  # seed of that choice


class Runtime(BaseModel):
    """``stages.dynamics.runtime`` (not fingerprinted)."""

    batch_size: Annotated[int, Field(ge=1)] = 4  # clips per AudioLDM-2 call
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the mapper and AudioLDM-2; the scorers: evaluate.device)


@dataclasses.dataclass
class Settings:
    """What every point computes with: this stage's params and the generate and evaluate stages' resolved ones."""

    own: Params
    generate: GenerateParams
    evaluate: EvalParams


def settings(ctx: StageContext) -> Settings:
    return Settings(ctx.params, ctx.uses("generate"), with_values(ctx.uses("evaluate"), gallery=False))


def out_dir(ctx: StageContext) -> Path:
    return ctx.cfg.mapper_dir / "dynamics"


def point_dir(out: Path, epoch: int) -> Path:
    return out / f"epoch-{epoch:04d}"


def point_done(out: Path, epoch: int, fingerprint: str) -> bool:
    m = point_dir(out, epoch) / "metrics.json"
    return m.exists() and read_json(m).get("fingerprint") == fingerprint


def read_record(ctx: StageContext) -> dict | None:
    out = out_dir(ctx)
    if (out / "_stage.json").exists():
        return read_json(out / "_stage.json")
    if (out / "_plan.json").exists():  # started, not complete
        plan = read_json(out / "_plan.json")
        done = sum(point_done(out, e, plan["fingerprint"]) for e in plan["epochs"])
        return {"complete": False, "fingerprint": plan["fingerprint"], "components": plan["components"],
                "progress": f"{done}/{len(plan['epochs'])} epochs scored"}
    return None


def preflight(ctx: StageContext) -> list[tuple[str, str]]:
    """Before the stage starts: both sections' weights (present, and the AudioLDM-2 folder's and the scorers' keys
    and shapes, as the generate and evaluate stages check them). Nothing while train keeps no per-epoch weights
    (``save_every: 0``, the default): the stage is off, and ``v2a check`` of every stage must not fail for a figure
    nobody asked for; ``run`` then says what to set."""
    from v2a.check import check_checkpoints
    from v2a.manifest import load_manifest, weights_dir

    if not ctx.cfg.stage("train").settings.save_every:
        return []
    manifest, wdir = load_manifest(), weights_dir(ctx.cfg)
    out = [(f"{name}.{pr.item}", pr.problem) for name in ctx.spec.uses
           for pr in check_checkpoints(ctx.cfg, ctx.cfg.stage(name), manifest, wdir)]
    if out:
        return out
    p = settings(ctx)
    if p.generate.model == "full":
        from frozen.audioldm2 import preflight_pipeline

        out += [("generate.params.checkpoint", msg) for msg in preflight_pipeline(p.generate.checkpoint)]
    from scoring.preflight import preflight_eval

    return out + [(f"evaluate.{item}", msg) for item, msg in preflight_eval(p.evaluate)]


def chosen_ids(val_ids: Path, clips: int, seed: int) -> list[str]:
    """The validation clips every point generates: a seeded choice of ``clips`` among the run's, sorted."""
    ids = val_ids.read_text(encoding="utf-8").split() if val_ids.exists() else []
    if not ids:
        raise RuntimeError(f"training dynamics need validation clips and the train run has none ({val_ids} is "
                           "missing or empty: stages.train.params.val_fraction 0?)")
    pick = np.random.default_rng([seed, 13]).permutation(len(ids))[:clips]
    return sorted(ids[i] for i in pick)


def run(ctx: StageContext) -> None:
    if ctx.rank != 0:
        log.info("dynamics: rank %d has nothing to do (one process scores every point)", ctx.rank)
        return
    run_dir = ctx.cfg.mapper_dir
    # the run's lock (trainer/stage.py): no training moves or rewrites the run while its epochs are scored into it
    with folder_lock(run_dir, "the mapper run"):
        _run(ctx, run_dir)


def _run(ctx: StageContext, run_dir: Path) -> None:
    from tqdm import tqdm

    from trainer.checkpoint import saved_epochs
    from v2a.dist import pick_device

    out, fp = out_dir(ctx), ctx.fingerprint.value
    epochs = saved_epochs(run_dir)
    if not epochs:
        raise RuntimeError(f"the train run {run_dir} kept no per-epoch weights (epochs/): set "
                           "stages.train.params.save_every to k > 0 (a new train run; e.g. --set "
                           "stages.train.params.save_every=5)")
    p = settings(ctx)
    ids = chosen_ids(run_dir / "val_ids.txt", p.own.clips, p.own.seed)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / ".lock", what=f"the training dynamics {out}"):
        (out / "_stage.json").unlink(missing_ok=True)
        atomic_write_json(out / "_plan.json", {"fingerprint": fp, "components": ctx.fingerprint.components,
                                               "epochs": list(epochs), "ids": ids})
        todo = [e for e in epochs if ctx.force or not point_done(out, e, fp)]
        log.info("dynamics: %d saved epochs, %d to score, %d validation clips each", len(epochs), len(todo), len(ids))
        if todo:
            points = Points(ctx.cfg, p, ids, device=pick_device(ctx.runtime.device),
                            batch_size=ctx.runtime.batch_size)
            for e in tqdm(todo, desc="dynamics", unit="epoch", disable=not ctx.progress):
                points.score(e, epochs[e], point_dir(out, e), fp)
        rows = write_curve(run_dir)
        atomic_write_json(out / "_stage.json", ctx.record(epochs=list(epochs), clips=ids, curve=rows))


class Points:
    """Each point: that epoch's weights generate the chosen clips, the evaluate protocol scores them. AudioLDM-2
    is built once; each point swaps in its epoch's mapper."""

    def __init__(self, cfg, p: Settings, ids: list[str], *, device, batch_size: int):
        self.cfg, self.p, self.ids, self.device, self.batch_size = cfg, p, ids, device, batch_size
        self._gen: Generator | None = None

    def generator(self, weights: Path) -> Generator:
        from infer.generate import Generator
        from trainer.mapper import load_mapper

        if self._gen is None:
            self._gen = Generator(self.p.generate, weights, device=self.device, batch_size=self.batch_size)
        else:
            self._gen.mapper = load_mapper(weights, device=self._gen.device)
        return self._gen

    def score(self, epoch: int, weights: Path, point: Path, fingerprint: str) -> dict:
        from scoring.run import run as evaluate

        shutil.rmtree(point, ignore_errors=True)  # a stale point (other settings) leaves nothing behind
        gen = self.generator(weights)
        with tempfile.TemporaryDirectory() as tmp:
            jobs, pairs = self.jobs(gen, epoch, point, Path(tmp))
            gen.run(jobs, point, progress=False)
            res = evaluate(self.p.evaluate, pairs=pairs, out_dir=point,
                           record={"epoch": epoch, "fingerprint": fingerprint})
        shown = {k: res["metrics"][k] for k, _ in CURVE}
        log.info("dynamics: epoch %d: %s", epoch, ", ".join(
            f"{k} {m['value']:.5g}" if m["status"] == "ok" else f"{k} {m['status']}" for k, m in shown.items()))
        return res

    def jobs(self, gen: Generator, epoch: int, point: Path, tmp: Path) -> tuple[list, list]:
        """The chosen clips (as the generate stage reads them from the cache) and the evaluation pairs (generated
        vs the cached 16 kHz audio)."""
        from infer.generate import cache_clips
        from pipeline import cache
        from scoring.run import ClipPair

        root = cache.open_store(self.cfg.zarr_path, "r")
        meta = cache.read_meta(root)
        row_of = {str(c): i for i, c in enumerate(meta["id"])}
        missing = [c for c in self.ids if c not in row_of]
        if missing:
            raise RuntimeError(f"validation clips {missing[:3]} of the train run are not in the cache "
                               f"{self.cfg.zarr_path}")
        clips = cache_clips(gen, root, meta, [row_of[c] for c in self.ids], self.cfg.frames_dir, tmp,
                            str(self.cfg.zarr_path), info={"epoch": epoch})
        pairs = [ClipPair(c.id, None if c.ground_truth is None else (c.ground_truth, 16000), point / f"{c.id}.wav",
                          c.source) for c in clips]
        return clips, pairs


def read_curve(run: Path) -> list[dict]:
    """One row per computed point of the train run ``run``: epoch, each metric's value (None when not ok) and its
    clip count."""
    rows = []
    for f in sorted((run / "dynamics").glob("epoch-*/metrics.json")):
        m = read_json(f)
        row = {"epoch": int(m.get("epoch", f.parent.name.split("-")[1]))}
        for key, metric in m["metrics"].items():
            row[key] = metric["value"] if metric.get("status") == "ok" else None
            row[f"{key}_clips"] = metric.get("n_clips", metric.get("n_gen"))
        rows.append(row)
    return sorted(rows, key=lambda r: r["epoch"])


def write_curve(run: Path) -> list[dict]:
    """``<run>/dynamics/dynamics.csv`` and ``dynamics.png`` from the points computed so far; returns the rows."""
    rows = read_curve(run)
    if not rows:
        return rows
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run / "dynamics" / "dynamics.csv", buf.getvalue())
    plot_curve(rows, run / "dynamics" / "dynamics.png")
    return rows


COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def plot_curve(rows: list[dict] | dict[str, list[dict]], path: Path, size: tuple[int, int] = (360, 260)) -> None:
    """Fig. 3-style panels (one per metric of CURVE, value over epochs) as a PNG, drawn with PIL.

    ``rows``: one run's curve, or ``{name: curve}`` for several runs in one figure (a legend names them).
    """
    from PIL import Image, ImageDraw

    series = rows if isinstance(rows, dict) else {"": rows}
    every = [r for curve in series.values() for r in curve]
    pw, ph = size
    img = Image.new("RGB", (pw * len(CURVE), ph + 14 * (len(series) > 1) * len(series)), "white")
    d = ImageDraw.Draw(img)
    epochs = sorted({r["epoch"] for r in every})
    for n, (key, title) in enumerate(CURVE):
        x0, y0, x1, y1 = n * pw + 50, 30, n * pw + pw - 15, ph - 35  # plot box
        d.text((n * pw + 50, 8), title, fill="black")
        d.rectangle((x0, y0, x1, y1), outline="black")
        values = [r[key] for r in every if r.get(key) is not None]
        if not values:
            d.text((x0 + 10, (y0 + y1) // 2), "not computed (skipped)", fill="gray")
            continue
        e_lo, e_hi = epochs[0], epochs[-1]
        v_lo, v_hi = min(values), max(values)
        pad = (v_hi - v_lo) * 0.1 or abs(v_hi) * 0.1 or 1.0
        v_lo, v_hi = v_lo - pad, v_hi + pad
        sx = lambda e: x0 + (x1 - x0) * ((e - e_lo) / (e_hi - e_lo) if e_hi > e_lo else 0.5)  # noqa: E731
        sy = lambda v: y1 - (y1 - y0) * (v - v_lo) / (v_hi - v_lo)  # noqa: E731
        for color, curve in zip(COLORS * 4, series.values()):
            xy = [(sx(r["epoch"]), sy(r[key])) for r in curve if r.get(key) is not None]
            if len(xy) > 1:
                d.line(xy, fill=color, width=2)
            for x, y in xy:
                d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        d.text((n * pw + 2, y0), f"{v_hi:.4g}", fill="black")
        d.text((n * pw + 2, y1 - 10), f"{v_lo:.4g}", fill="black")
        for e in epochs:
            d.text((sx(e) - 6, y1 + 4), str(e), fill="black")
        d.text(((x0 + x1) // 2 - 15, ph - 15), "epoch", fill="black")
    if len(series) > 1:
        for i, (color, name) in enumerate(zip(COLORS * 4, series)):
            d.rectangle((50, ph + 14 * i + 2, 60, ph + 14 * i + 12), fill=color)
            d.text((66, ph + 14 * i), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)
