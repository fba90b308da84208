"""``v2a generate VIDEO...``: sound for any video files or folders, with the same decode and encoder code as the cache.

The mapper is either the trained run's (``runs/mapper``, fresh for the configuration) or an exported pipeline
folder / hub id (``--mapper``), which needs no cache at all. Each clip is decoded (4 FPS, 10 s windows), its frames
pass through the cache's frame codec and are encoded with the mapper's encoders, rounded to the cache's storage
dtype: the mapper sees exactly what the cache would have given it. With the run's mapper, features are taken
from the cache when it holds the same source file and is fresh.

A run over files or folders is a resumable batch job (:func:`run_videos`):

1. it takes the output folder's lock (``.lock``): a second run into the same folder is refused, naming the first's pid;
2. every input is probed (container headers, a video stream, sane dimensions) before any model loads; a file that
   cannot be used is listed in ``rejects.csv`` (rewritten by every run: it lists this run's rejects only, and is
   removed when there are none) with its full reason, and the others go on; when every input is rejected the run fails;
3. a clip whose ``<id>.json`` is present and records the same request (generation settings, prompt, span, mapper,
   generator, the source file's name, size and mtime) and whose files are all there is skipped (``overwrite``
   redoes it), so a killed run resumes; the others are generated, their old json removed first and the new one
   written last, after the wav, the png and the video: a json on disk always describes the files beside it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from infer.audioldm2 import SAMPLE_RATE, clip_seed
from infer.core import Clip, generator_for
from infer.generate import write_clip
from infer.params import GenerationSettings
from infer.pipeline import MFMMapperPipeline, check_span, clip_ids
from pipeline.inputs import SKIP_EXTS
from v2a.config import Config
from v2a.io import InputError, atomic_write_text, exclusive_lock, read_json, sha256_bytes, sha256_json

log = logging.getLogger(__name__)

REJECTS = "rejects.csv"
LOCK = ".lock"  # in the output folder, held for the whole run


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


@dataclass
class MapperSource:
    """What will generate, known before any model loads: its settings, frames params and identity (the mapper's
    and the generator's), and how to build it on a device."""

    settings: GenerationSettings
    frames: object  # pipeline.frames.FramesParams
    generator: str  # audioldm2 | audioldm
    identity: dict
    build: Callable[[str], MFMMapperPipeline]
    run_mapper: bool  # the trained run's mapper (its cache's features may be used)


def describe_mapper(cfg: Config, mapper: str | None, *, configured: bool) -> MapperSource:
    """The run's mapper (``mapper`` None) or an exported folder / hub id, from their records only. ``configured``:
    the configuration was chosen by the user (a stages.yaml here or ``-c``), so its encoders and AudioLDM-2 are
    used and must be those the mapper was trained with (checked here); otherwise the folder's own record is used."""
    from infer import hub
    from infer.export import check_trained, configured_encoders, pipeline_from_run
    from infer.generate import mapper_checkpoint
    from infer.pipeline import _frames_params

    p = cfg.stage("generate").settings
    if mapper is None:
        check_trained(cfg)
        ckpt = mapper_checkpoint(cfg.mapper_dir, p.mapper)
        manifest = (ckpt / "manifest.json").read_bytes()
        generator = generator_for(read_json(ckpt / "manifest.json").get("mapper", {}).get("kind", ""))
        return MapperSource(p.settings(), cfg.stage("frames").settings, generator,
                            {"mapper": f"run {p.mapper}: {sha256_bytes(manifest)}", "model": p.model_params(generator)},
                            lambda device: pipeline_from_run(cfg, p.mapper, device=device), True)
    folder = hub.resolve_folder(mapper)
    generator, model, settings = hub.read_generation(read_json(folder / hub.FILES["generation"]))
    trained = read_json(folder / hub.FILES["encoders"])
    weights = folder / hub.FILES["mapper_weights"]
    st = weights.stat()
    ident = {"mapper": sha256_json([(folder / hub.FILES["mapper_config"]).read_text(), st.st_size, st.st_mtime_ns]),
             "model": model, "encoders": trained}
    if not configured:
        return MapperSource(settings, _frames_params(trained["frames"]), generator, ident,
                            lambda device: MFMMapperPipeline.from_pretrained(folder, device=device), False)
    mine = configured_encoders(cfg, [n for n in ("cavp", "timechat", "clip") if n in cfg.stages])
    hub.check_encoders(trained, mine, str(mapper))
    model = p.model_params(generator)
    settings = dataclasses.replace(settings, label_model=p.label_model)  # the CLIP of this machine's configuration
    encoders = {n: mine["encoders"][n]["params"] for n in trained["encoders"]}
    ident.update(model=model, encoders=encoders)
    return MapperSource(settings, _frames_params(trained["frames"]), generator, ident,
                        lambda device: MFMMapperPipeline.from_pretrained(folder, device=device, audio_model=model,
                                                                         encoders=encoders), False)


def load_pipeline(cfg: Config, mapper: str | None, *, configured: bool, device: str) -> MFMMapperPipeline:
    """The run's pipeline (``mapper`` None), or an exported folder / hub id (see :func:`describe_mapper`)."""
    pipe = describe_mapper(cfg, mapper, configured=configured).build(device)
    pipe.weights_config = cfg
    return pipe


def probe_video(path: Path, max_side: int) -> None:
    """Raise ``MediaError`` (the reason decoding would give) for a file that is not a usable video, from its
    container headers only: not a video or truncated, no video stream, absurd dimensions."""
    from pipeline.media import MediaError, check_dimensions, probe

    info = probe(str(path))
    if not info.has_video:
        raise MediaError("no_video_stream" if info.has_audio else "not_a_video",
                         f"container {info.container} has no video stream")
    check_dimensions(info.width, info.height, max_side=max_side)


def _from_cache(pipe: MFMMapperPipeline, hit: dict, path: Path, cid: str, label: bool) -> Clip:
    from pipeline.media import decode_clip

    fp = pipe.frames
    d = decode_clip(str(path), fps=fp.fps, seconds=fp.seconds, size=fp.size, sample_rate=fp.sample_rate,
                    max_side=fp.max_side, silence_dbfs=fp.silence_dbfs)  # the ground truth for the spectrogram
    samples = int(round(pipe.span_seconds(path) * SAMPLE_RATE))  # one window, at most the video's length
    info = {"windows": 1, "video_seconds": d.duration}
    if label:
        info["labels"] = pipe.labeler().top(d.frames, d.n_frames)
    return Clip(id=cid, features={n: hit[n][hit["row"]][None] for n in pipe.encoder_names}, source=str(path),
                samples=samples, ground_truth=d.audio[: min(d.audio_len, samples)]
                if d.has_audio and not d.audio_silent else None, info=info)


@dataclass
class VideoRun:
    """What a run over files did: the records written, the clips skipped (already complete), the rejects."""

    written: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (source, reason, detail)

    def summary(self, out: Path) -> str:
        line = (f"done {len(self.written)}, skipped {len(self.skipped)} (already complete), rejected "
                f"{len(self.rejects)} -> {out}")
        return line + (f" (reasons in {REJECTS})" if self.rejects else "")


def _complete(out: Path, cid: str, key: str) -> bool:
    """``<cid>.json`` records this request and every file it names is there."""
    try:
        rec = read_json(out / f"{cid}.json")
    except (OSError, ValueError):
        return False
    files = [rec.get(k) for k in ("wav", "png", "video")]
    return rec.get("request_key") == key and all((out / f).is_file() for f in files if f) and bool(rec.get("wav"))


def _write_rejects(out: Path, rejects: list[tuple[str, str, str]]) -> None:
    """This run's rejects (the file of an earlier run is replaced, or removed when there are none)."""
    if not rejects:
        (out / REJECTS).unlink(missing_ok=True)
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "reason", "detail"])
    w.writerows(rejects)
    atomic_write_text(out / REJECTS, buf.getvalue())


def _reject(run: VideoRun, path: Path, e) -> None:
    log.error("%s: rejected: %s", path, e)  # the full reason, with its numbers
    run.rejects.append((str(path), e.reason, e.detail))


def generate_videos(cfg: Config, inputs: list[Path], out: Path, **kw) -> list[dict]:
    """The records of the clips written by :func:`run_videos` (skipped and rejected ones are not in it)."""
    return run_videos(cfg, inputs, out, **kw).written


def run_videos(cfg: Config, inputs: list[Path], out: Path, *, mapper: str | None = None, configured: bool = True,
               prompt: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
               guidance: float | None = None, seed: int | None = None, duration: float | None = None,
               whole: bool = False, batch_size: int = 4, progress: bool = True, overwrite: bool = False) -> VideoRun:
    """Generate for every video under ``inputs`` (wav, png, the video with its new soundtrack, json per clip) into
    ``out``, as a resumable batch job (the module docstring).

    Arguments left None take the mapper's generation settings. ``prompt``: a text for every video; None or
    ``"auto"``: each video's best VGGSound class by CLIP zero-shot (``label_model``; with ``label_model`` null and
    no prompt given: no prompt); ``""``: no prompt. ``whole`` covers each video's whole length in overlapping
    crossfaded 10 s windows, ``duration`` that many seconds; the sound is never longer than the video (infer/pipeline.py).
    Clip ``c`` is seeded ``clip_seed(seed, c's id)`` as in the generate stage and ``pipe()``."""
    from infer.labels import AUTO
    from pipeline.media import MediaError
    from v2a.dist import pick_device

    paths = list_videos(inputs)
    if not paths:
        raise InputError(f"no video files under {', '.join(map(str, inputs))}")
    src = describe_mapper(cfg, mapper, configured=configured)  # records and configuration checks only
    settings = src.settings.replace(negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed)
    check_span(settings, duration, whole)
    asked = _asked_prompt(prompt, src.generator, settings)
    used = dataclasses.asdict(settings) if asked == AUTO else {
        k: v for k, v in dataclasses.asdict(settings).items() if k != "label_model"}
    out.mkdir(parents=True, exist_ok=True)
    run = VideoRun()
    with exclusive_lock(out / LOCK, what=f"v2a generate into {out}"):  # before anything is written there
        # 1. every input probed before any model loads
        ok = []
        for path, cid in zip(paths, clip_ids(paths)):
            try:
                probe_video(path, src.frames.max_side)
                ok.append((path, cid))
            except MediaError as e:
                _reject(run, path, e)
        _write_rejects(out, run.rejects)
        # 2. clips already complete for this request are skipped
        todo = []
        for path, cid in ok:
            st = path.stat()
            request = {"settings": used, "prompt": asked,
                       "span": {"duration": duration, "whole": whole}, **src.identity,
                       "source": {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}}
            key = sha256_json(request)
            if not overwrite and _complete(out, cid, key):
                run.skipped.append(cid)
            else:
                todo.append((path, cid, request, key))
        if run.skipped:
            log.info("%d clips already complete in %s: skipped (--overwrite redoes them)", len(run.skipped), out)
        if todo:
            _generate(cfg, src, settings, todo, out, run, asked=asked, duration=duration, whole=whole,
                      batch_size=batch_size, progress=progress,
                      device=pick_device(cfg.stage("generate").runtime.get("device", "auto")))
        _write_rejects(out, run.rejects)
    if run.rejects and not run.written and not run.skipped:
        raise RuntimeError(f"no sound generated: all {len(run.rejects)} inputs were rejected (reasons in "
                           f"{out / REJECTS})")
    return run


def _asked_prompt(prompt: str | None, generator: str, settings: GenerationSettings) -> str:
    """What the run asks for as prompt: a text, ``auto`` or ``''`` (none). AudioLDM (V2A-Mapper) takes no text;
    without a label model, a video without a prompt gets none (``--prompt auto`` itself is then an error)."""
    from infer.labels import AUTO

    if generator != "audioldm2":
        if prompt not in (None, "", AUTO):
            log.warning("AudioLDM (V2A-Mapper) is conditioned on the CLAP embedding only: --prompt is unused")
        return ""
    if prompt is None:
        if not settings.label_model:
            log.info("no --prompt and no label_model: the videos get no prompt")
            return ""
        return AUTO
    if prompt == AUTO and not settings.label_model:
        raise ValueError("--prompt auto needs a CLIP to label the videos, but the generate setting label_model is "
                         "null; give a prompt or set label_model")
    return prompt


def _generate(cfg: Config, src: MapperSource, settings: GenerationSettings, todo: list, out: Path, run: VideoRun,
              *, asked: str, duration, whole: bool, batch_size: int, progress: bool, device) -> None:
    """Load the models, decode and encode the clips to do (decoding rejects recorded), generate and write them."""
    from infer.labels import AUTO, format_labels
    from pipeline.media import MediaError

    pipe = src.build(device)
    pipe.weights_config = cfg
    pipe.settings = settings  # the label model and every setting of this run
    cached = _cached_features(cfg, pipe.encoder_names) if src.run_mapper and not whole and duration is None else {}
    clips = []
    for path, cid, request, key in todo:
        hit = cached.get(str(path.resolve()))
        label = asked == AUTO
        try:
            clip = _from_cache(pipe, hit, path, cid, label) if hit else pipe.prepare(
                path, duration=duration, whole=whole, clip_id=cid, label=label)
        except MediaError as e:
            _reject(run, path, e)
            continue
        labels = clip.info.pop("labels", None)
        clip.prompt = labels[0][0] if labels else (asked or None)
        clip.seed = clip_seed(settings.seed, cid)
        if labels:
            log.info("%s: prompt %r (auto: %s)", cid, clip.prompt, format_labels(labels))
        clip.info.update(source=str(path), features="cache" if hit else "computed",
                         prompt_from="auto" if labels else ("given" if asked else "none"),
                         labels=[{"label": n, "score": round(p, 6)} for n, p in labels] if labels else None,
                         request=request, request_key=key)
        (out / f"{cid}.json").unlink(missing_ok=True)  # from here until the new json, the clip is not complete
        clips.append(clip)
    for c, a in pipe.core.generate_iter(clips, settings, batch_size=batch_size, progress=progress):
        run.written.append(write_clip(out, c.id, a, video=c.source, ground_truth=c.ground_truth, prompt=c.prompt,
                                      info={"seed": c.seed, **c.info},
                                      video_seconds=len(a) / SAMPLE_RATE if duration is not None else None))
