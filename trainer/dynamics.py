"""Training dynamics (paper Fig. 3): every k epochs, generate a fixed validation subset and score it.

``stages.train.params.dynamics_every: k`` (0 = off) and ``dynamics_clips: n``: after epochs k, 2k, ... and the last
one, that epoch's weights generate audio for n validation clips (seeded choice among the run's
``val_ids.txt``, the same clips at every point) with the generate stage's params, and the evaluate stage's
protocol scores them (IB-score, DeSync, FD_PaSST and the rest). Per point ``<run>/dynamics/epoch-NNNN/`` holds
the wavs, muxed videos and spectrograms (listening samples), ``metrics.json`` and ``per_clip.csv``; the curve is
``<run>/dynamics.csv`` and ``<run>/dynamics.png`` (IB-score, DeSync, FD_PaSST over epochs, drawn with PIL).

A point whose ``metrics.json`` exists is not recomputed (a resumed run carries on). The training itself is
unaffected: dropout is reseeded before every step and the data order does not use torch's generator.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from v2a.io import atomic_write_text, read_json

log = logging.getLogger(__name__)

CURVE = [("ib_score", "IB-score (higher is better)"), ("desync", "DeSync (lower is better)"),
         ("fd_passt", "FD_PaSST (lower is better)")]


class Dynamics:
    """The ``on_epoch`` callback of ``trainer.train.run``; built by the train stage from the whole config."""

    def __init__(self, cfg, *, every: int, clips: int, epochs: int, out: Path, seed: int = 0):
        self.cfg, self.every, self.clips, self.epochs, self.out, self.seed = cfg, every, clips, epochs, out, seed
        self._gen = None  # AudioLDM-2 is built once; each point swaps in that epoch's mapper

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == self.epochs)

    def chosen_ids(self) -> list[str]:
        ids = (self.out / "val_ids.txt").read_text(encoding="utf-8").split()
        if not ids:
            raise ValueError("training dynamics need validation clips and the run has none (val_fraction 0?)")
        pick = np.random.default_rng([self.seed, 13]).permutation(len(ids))[: self.clips]
        return sorted(ids[i] for i in pick)

    def __call__(self, epoch: int, save) -> None:
        """After ``epoch`` (before ``last/``): ``save(folder)`` writes the weights this point generates with."""
        if not self.due(epoch):
            return
        rel = f"dynamics/epoch-{epoch:04d}"
        point = self.out / rel
        if (point / "metrics.json").exists():
            return
        save(f"{rel}/mapper")
        checkpoint = point / "mapper"
        log.info("dynamics: epoch %d, generating and scoring %d validation clips", epoch, len(self.chosen_ids()))
        with tempfile.TemporaryDirectory() as tmp:
            pairs = self._generate(checkpoint, point, Path(tmp))
            from scoring.run import run as evaluate_pairs

            params = {**self.cfg.stage("evaluate").params, "gallery": False}
            res = evaluate_pairs(params, pairs=pairs, out_dir=point, record={"epoch": epoch})
        shutil.rmtree(checkpoint, ignore_errors=True)  # the samples and scores stay; the weights were a means
        shown = {k: res["metrics"][k] for k, _ in CURVE}
        log.info("dynamics: epoch %d: %s", epoch, ", ".join(
            f"{k} {m['value']:.5g}" if m["status"] == "ok" else f"{k} {m['status']}" for k, m in shown.items()))
        write_curve(self.out)

    def _generate(self, checkpoint: Path, point: Path, tmp: Path) -> list:
        from infer.generate import ClipJob, GenerateParams, Generator, source_video
        from pipeline import cache
        from pipeline.encode import pick_device
        from pipeline.framestore import load_clips
        from scoring.run import ClipPair

        spec = self.cfg.stage("generate")
        if self._gen is None:
            self._gen = Generator(GenerateParams.from_dict(spec.params), checkpoint,
                                  device=pick_device(spec.runtime.get("device", "auto")),
                                  batch_size=int(spec.runtime.get("batch_size", 4)))
        else:
            from trainer.mapper import load_mapper

            self._gen.mapper = load_mapper(checkpoint, device=self._gen.device)
        gen = self._gen
        root = cache.open_store(self.cfg.zarr_path, "r")
        meta = cache.read_meta(root)
        row_of = {str(c): i for i, c in enumerate(meta["id"])}
        rows = [row_of[c] for c in self.chosen_ids()]
        clips = load_clips(self.cfg.frames_dir, set(rows))
        s = gen.spec
        jobs, pairs = [], []
        for i in rows:
            cid, c = str(meta["id"][i]), clips[i]
            video = source_video(str(meta["source"][i]), tmp)
            gt = c.audio[: c.meta["audio_len"]] if c.meta["has_audio"] else None
            jobs.append(ClipJob(id=cid, cavp=root["cavp/emb"][i] if s.encoders != "timechat" else None,
                                timechat=root["timechat/emb"][i] if s.encoders != "cavp" else None,
                                prompt=str(meta["label"][i]) or None, video=video, ground_truth=gt,
                                info={"row": i}))
            pairs.append(ClipPair(cid, None if gt is None else (gt, 16000), point / f"{cid}.wav", video))
        gen.run(jobs, point, progress=False)
        return pairs


def read_curve(run: Path) -> list[dict]:
    """One row per computed point: epoch, each metric's value (None when not ok) and its clip count."""
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
    rows = read_curve(run)
    if not rows:
        return rows
    keys = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run / "dynamics.csv", buf.getvalue())
    plot_curve(rows, run / "dynamics.png")
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
