"""``v2a generate VIDEO...``: sound for any video files or folders, with the same decode and encoder code as the cache.

The mapper is either the trained run's (``runs/mapper``, fresh for the configuration) or an exported pipeline
folder / hub id (``--mapper``), which needs no cache at all. Each clip is decoded (4 FPS, 10 s windows), its frames
pass through the cache's frame codec and are encoded with the mapper's encoders, rounded to the cache's storage
dtype: the mapper sees exactly what the cache would have given it. With the run's mapper, features are taken
from the cache when it holds the same source file and is fresh. A file that cannot be decoded is reported (and
listed in ``rejects.csv`` in the output folder); the other files go on.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from infer.audioldm2 import clip_seed
from infer.core import Clip
from infer.generate import write_clip
from infer.pipeline import MFMMapperPipeline, clip_ids
from pipeline.inputs import SKIP_EXTS
from v2a.config import Config
from v2a.io import atomic_write_text, read_json

log = logging.getLogger(__name__)


def list_videos(inputs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and f.suffix.lower().lstrip(".") not in SKIP_EXTS)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


def _cached_features(cfg: Config, encoders: list[str]) -> dict[str, dict]:
    """{resolved source path: {encoder: features}} for clips of a fresh cache (empty when there is none)."""
    from v2a.runner import Runner

    if not cfg.zarr_path.exists():
        return {}
    r = Runner(cfg)
    try:
        if not all(r.status(e)[0] for e in encoders):
            return {}
    except (RuntimeError, FileNotFoundError, ValueError):
        return {}
    from pipeline import cache

    root = cache.open_store(cfg.zarr_path, "r")
    meta = cache.read_meta(root)
    base = cfg.path("videos")
    out = {}
    for i in np.flatnonzero(meta["status"] == ""):
        src = Path(str(meta["source"][i]))
        src = src if src.is_absolute() else (base / src if not src.exists() else src)
        out[str(src.resolve())] = {"row": int(i), **{e: root[f"{e}/emb"] for e in encoders}}
    return out


def load_pipeline(cfg: Config, mapper: str | None, *, configured: bool, device: str) -> MFMMapperPipeline:
    """The run's pipeline (``mapper`` None), or an exported folder / hub id. ``configured``: the configuration
    was chosen by the user (a stages.yaml here or ``-c``), so its encoders and AudioLDM-2 are used and must be
    those the mapper was trained with; otherwise the folder's own record is used as it is."""
    from infer import hub
    from infer.export import configured_encoders, pipeline_from_run

    if mapper is None:
        return pipeline_from_run(cfg, cfg.stage("generate").settings.mapper, device=device)
    if not configured:
        return MFMMapperPipeline.from_pretrained(mapper, device=device)
    folder = hub.resolve_folder(mapper)
    trained = read_json(folder / hub.FILES["encoders"])
    mine = configured_encoders(cfg, [n for n in ("cavp", "timechat", "clip") if n in cfg.stages])
    hub.check_encoders(trained, mine, str(mapper))
    generator = hub.read_generation(read_json(folder / hub.FILES["generation"]))[0]
    model = cfg.stage("generate").settings.model_params(generator)
    return MFMMapperPipeline.from_pretrained(folder, device=device, audio_model=model, encoders={
        n: mine["encoders"][n]["params"] for n in trained["encoders"]})


def _from_cache(pipe: MFMMapperPipeline, hit: dict, path: Path, cid: str) -> Clip:
    from pipeline.media import decode_clip

    fp = pipe.frames
    d = decode_clip(str(path), fps=fp.fps, seconds=fp.seconds, size=fp.size, sample_rate=fp.sample_rate,
                    max_side=fp.max_side, silence_dbfs=fp.silence_dbfs)  # the ground truth for the spectrogram
    return Clip(id=cid, features={n: hit[n][hit["row"]][None] for n in pipe.encoder_names}, source=str(path),
                ground_truth=d.audio[: d.audio_len] if d.has_audio and not d.audio_silent else None,
                info={"windows": 1, "video_seconds": d.duration})


def generate_videos(cfg: Config, inputs: list[Path], out: Path, *, mapper: str | None = None,
                    configured: bool = True, prompt: str | None = None, negative_prompt: str | None = None,
                    steps: int | None = None, guidance: float | None = None, seed: int | None = None,
                    duration: float | None = None, whole: bool = False, batch_size: int = 4,
                    progress: bool = True) -> list[dict]:
    """Generate for every video under ``inputs`` (wav, png, the video with its new soundtrack, json per clip).

    Arguments left None take the pipeline's generation settings; ``whole`` covers each video's whole length in
    overlapping crossfaded 10 s windows, ``duration`` that many seconds. Clip ``c`` is seeded ``clip_seed(seed,
    c's id)`` as in the generate stage and ``pipe()``."""
    from v2a.dist import pick_device
    from pipeline.media import MediaError

    device = pick_device(cfg.stage("generate").runtime.get("device", "auto"))
    pipe = load_pipeline(cfg, mapper, configured=configured, device=device)
    pipe.check_span(duration, whole)  # before any decoding
    settings = pipe.settings.replace(negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed)
    cached = _cached_features(cfg, pipe.encoder_names) if mapper is None and not whole and duration is None else {}
    paths = list_videos(inputs)
    used = prompt if pipe.core.uses_text else None
    if prompt and used is None:
        log.warning("AudioLDM (V2A-Mapper) is conditioned on the CLAP embedding only: --prompt is unused")
    clips, rejects = [], []
    for path, cid in zip(paths, clip_ids(paths)):
        hit = cached.get(str(path.resolve()))
        try:
            clip = _from_cache(pipe, hit, path, cid) if hit else pipe.prepare(path, duration=duration, whole=whole,
                                                                                 clip_id=cid)
        except MediaError as e:
            log.error("%s: cannot generate: %s", path, e.reason)
            rejects.append((str(path), e.reason))
            continue
        clip.prompt, clip.seed = used, clip_seed(settings.seed, cid)
        clip.info.update(source=str(path), features="cache" if hit else "computed")
        clips.append(clip)
    out.mkdir(parents=True, exist_ok=True)
    if rejects:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["source", "reason"])
        w.writerows(rejects)
        atomic_write_text(out / "rejects.csv", buf.getvalue())
    return [write_clip(out, c.id, a, video=c.source, ground_truth=c.ground_truth, prompt=c.prompt,
                       info={"seed": c.seed, **c.info})
            for c, a in pipe.core.generate_iter(clips, settings, batch_size=batch_size, progress=progress)]
