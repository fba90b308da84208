"""The generate stage's clip writer: the trained mapper and AudioLDM-2 (V2A-Mapper: AudioLDM) over clips of the
feature cache, through the one generation core (infer/core.py), each clip's outputs written by :func:`write_clip`.

``write_clip`` serves every entry point (the stage, ``v2a generate``, the web page). Per clip: ``<id>.wav``
(16 kHz), ``<id>.<ext>`` (the source video, its video stream copied, with the new soundtrack; cut to the sound's
span when asked), ``<id>.png`` (generated and, when known, ground-truth log-mel spectrograms on one absolute dBFS
scale; a sound peaking below -60 dBFS is titled SILENT and logged) and ``<id>.json`` (what was done, the prompt, seed
and peak level; written last, so an interrupted run resumes at the first clip without it).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from infer.audioldm2 import clip_seed
from infer.core import Clip, GenerationCore, feature_names, generator_for
from infer.media_out import mux_audio, write_wav
from infer.params import GenerateParams  # defined there (light, for the config check); infer.generate.GenerateParams
from pipeline.spectrogram import SILENT_DBFS, is_silent, peak_dbfs, write_spectrogram_png
from v2a.io import atomic_write_json

log = logging.getLogger(__name__)

MUX_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}


def cache_clips(gen: "Generator", root, meta: dict, rows: list[int], frames_dir: Path, tmp: Path, source: str,
                info: dict | None = None) -> list[Clip]:
    """Rows of the feature cache as one-window :class:`~infer.core.Clip` s for ``gen``'s mapper: the features it
    reads (checked against the shapes it was trained on), the label as prompt, the source video (extracted to
    ``tmp`` from a webdataset shard) and the cached 16 kHz audio as ground truth. ``source``: the cache, for messages."""
    from pipeline.framestore import load_clips

    feats = {n: root[f"{n}/emb"] for n in feature_names(gen.spec)}  # zarr arrays (N, ...)
    gen.check_features({n: a.shape[1:] for n, a in feats.items()}, source)
    gt = {i: c.audio[: c.meta["audio_len"]] for i, c in load_clips(frames_dir, set(rows)).items()
          if c.meta["has_audio"]}
    return [Clip(id=str(meta["id"][i]), features={n: a[i][None] for n, a in feats.items()},
                 prompt=str(meta["label"][i]) or None, source=source_video(str(meta["source"][i]), tmp),
                 ground_truth=gt.get(i), info={"row": i, "source": str(meta["source"][i]), **(info or {})})
            for i in rows]


def mapper_checkpoint(run_dir: Path, which: str) -> Path:
    for name in ([which] if which != "best" else ["best", "last"]):
        p = run_dir / name
        if p.exists():
            return p
    raise RuntimeError(f"no trained mapper in {run_dir} ({which}/ missing): run `make train` (v2a run train) first")


class Generator:
    """The generate stage's params, the trained mapper and its AudioLDM(-2) on one device; writes each clip."""

    def __init__(self, params: GenerateParams, mapper_dir: Path, device: str = "cpu", batch_size: int = 4):
        from trainer.mapper import load_mapper

        self.p, self.device, self.batch_size = params, device, batch_size
        mapper = load_mapper(mapper_dir, device=device)
        self.core = GenerationCore.build(mapper, params.model_params(generator_for(mapper.spec.kind)), device)
        self.settings = params.settings()

    @property
    def mapper(self):
        return self.core.mapper

    @mapper.setter
    def mapper(self, mapper) -> None:  # another checkpoint of the same run (the dynamics stage, lab/dynamics.py)
        self.core.mapper = mapper.eval()

    @property
    def spec(self):
        return self.core.spec

    def check_features(self, shapes: dict[str, tuple | None], source: str) -> None:
        self.core.check_features(shapes, source)

    def clip(self, clip: Clip) -> Clip:
        """The clip as the stage generates it: seeded ``clip_seed(seed, id)``, its label as prompt when
        ``use_label`` (and the generator takes text), cut to ``crop_seconds``."""
        prompt = clip.prompt if self.p.use_label and self.core.uses_text else None
        samples = int(round(self.p.crop_seconds * 16000)) if self.p.crop_seconds else None
        return dataclasses.replace(clip, prompt=prompt, seed=clip_seed(self.p.seed, clip.id), samples=samples)

    def run(self, clips: list[Clip], out_dir: Path, *, progress: bool = True) -> list[dict]:
        """Generate every clip (batched, ``batch_size`` at a time, in order) and write each clip's outputs."""
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.p.crop_seconds is not None and self.p.crop_seconds <= 0:
            raise ValueError(f"crop seconds={self.p.crop_seconds}: must be positive (or None for no crop)")
        todo = [self.clip(c) for c in clips]
        return [write_clip(out_dir, c.id, a, video=c.source, ground_truth=c.ground_truth, prompt=c.prompt,
                           info={"seed": c.seed, **c.info})
                for c, a in self.core.generate_iter(todo, self.settings, batch_size=self.batch_size,
                                                    progress=progress)]


def write_clip(out_dir: Path, cid: str, audio: np.ndarray, *, video: str | None, ground_truth: np.ndarray | None,
               prompt: str | None, info: dict, video_seconds: float | None = None) -> dict:
    """Write ``<cid>.wav``, ``<cid>.png`` (generated over ground truth), the video with its new soundtrack and
    ``<cid>.json`` (last: the clip is done). A video that cannot be written is recorded, the rest stands.
    ``video_seconds``: keep only that much of the video (from its first frame; ``--duration``), else all of it."""
    peak = peak_dbfs(audio)
    rec = {"id": cid, "prompt": prompt, **info, "seconds": round(len(audio) / 16000, 4),
           "peak_dbfs": round(peak, 2) if np.isfinite(peak) else None, "silent": is_silent(audio)}
    if rec["silent"]:
        log.warning("%s: the generated sound is silent (peak %s dBFS, below %g dBFS)", cid,
                    "-inf" if rec["peak_dbfs"] is None else f"{rec['peak_dbfs']:.1f}", SILENT_DBFS)
    write_wav(out_dir / f"{cid}.wav", audio)
    rec["wav"] = f"{cid}.wav"
    gt = None if ground_truth is None else ground_truth[: len(audio)]
    write_spectrogram_png(out_dir / f"{cid}.png", audio, gt, title=prompt or cid)
    rec["png"] = f"{cid}.png"
    if video is not None:
        ext = Path(video).suffix.lower()
        ext = ext if ext in MUX_EXTS else ".mkv"
        try:
            rec["mux"] = mux_audio(video, audio, out_dir / f"{cid}{ext}", seconds=video_seconds)
            rec["video"] = f"{cid}{ext}"
        except (ValueError, RuntimeError, OSError) as e:  # the wav and png stand; say why the video did not
            rec["video_error"] = f"{type(e).__name__}: {e}"
            log.error("%s: could not write the video with its new soundtrack: %s", cid, e)
    atomic_write_json(out_dir / f"{cid}.json", rec)  # last: the clip is done
    return rec


def source_video(source: str, tmp: Path) -> str | None:
    """A path PyAV can mux from: the file itself, or a webdataset member extracted to ``tmp``."""
    if "::" not in source:
        return source if Path(source).exists() else None
    import tarfile

    tar_path, member = source.split("::", 1)
    dest = tmp / Path(member).name
    with tarfile.open(tar_path) as tar:
        dest.write_bytes(tar.extractfile(member).read())
    return str(dest)
