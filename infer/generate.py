"""Generation: the trained mapper turns visual features into pooled AudioMAE tokens, AudioLDM-2 into sound; or,
for a V2A-Mapper checkpoint (its ``kind``), CLIP features into a CLAP embedding and AudioLDM into sound.

Two entry points share one core (:class:`Generator`):
  - the ``generate`` stage: every clip of a split of the feature cache (``make generate``);
  - ``v2a generate VIDEO...``: any video files or folders; features are computed with the same frames/encoder
    code as the cache (or taken from the cache when it holds that file's clip and is fresh).
Per clip: ``<id>.wav`` (16 kHz), ``<id>.<ext>`` (the source video, its video stream copied, with the new
soundtrack), ``<id>.png`` (generated and, when known, ground-truth log-mel spectrograms) and ``<id>.json``
(what was done; written last, so an interrupted run resumes at the first clip without it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from infer.audioldm2 import build_pipeline, clip_seed, generate_audio, generated_stream_width
from infer.audioldm import build_audioldm_pipeline, clap_width, generate_from_clap
from infer.media_out import crop_audio, mux_audio, write_wav
from infer.params import GenerateParams  # defined there (light, for the config check); infer.generate.GenerateParams
from pipeline.spectrogram import write_spectrogram_png
from v2a.io import atomic_write_json

log = logging.getLogger(__name__)

MUX_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}


def feature_names(spec) -> list[str]:
    """The cache groups a mapper reads: CAVP and/or TimeChat, or CLIP for a V2A-Mapper."""
    return {"both": ["cavp", "timechat"], "cavp": ["cavp"], "timechat": ["timechat"], "clip": ["clip"]}[spec.encoders]


def streams(spec, feats: dict) -> tuple:
    """(first, second) visual inputs of the mapper: (cavp, timechat), or (clip, None) for a V2A-Mapper."""
    if spec.encoders == "clip":
        return feats.get("clip"), None
    return feats.get("cavp"), feats.get("timechat")


@dataclass
class ClipJob:
    id: str
    cavp: np.ndarray | None  # (40, D_cavp): the first visual stream (CLIP (40, D_clip) for a V2A-Mapper)
    timechat: np.ndarray | None  # (W, 32, D_tc)
    prompt: str | None
    video: str | None  # a path to mux into (None: no video written)
    ground_truth: np.ndarray | None = None  # 16 kHz, for the PNG
    info: dict = field(default_factory=dict)


def mapper_checkpoint(run_dir: Path, which: str) -> Path:
    for name in ([which] if which != "best" else ["best", "last"]):
        p = run_dir / name
        if p.exists():
            return p
    raise RuntimeError(f"no trained mapper in {run_dir} ({which}/ missing): run `make train` (v2a run train) first")


class Generator:
    """Mapper + AudioLDM-2 on one device; writes each clip's outputs."""

    def __init__(self, params: GenerateParams, mapper_dir: Path, device: str = "cpu", batch_size: int = 4):
        from trainer.mapper import load_mapper

        self.p, self.device, self.batch_size = params, device, batch_size
        self.mapper = load_mapper(mapper_dir, device=device)
        self.spec = self.mapper.spec
        self.v2a = self.spec.kind.startswith("v2a_")  # V2A-Mapper: a CLAP embedding for AudioLDM
        if self.v2a:
            self.pipe = build_audioldm_pipeline(params.pipeline_params(), device=device)
            width, what = clap_width(self.pipe), "AudioLDM"
        else:
            self.pipe = build_pipeline(params.pipeline_params(), device=device)
            width, what = generated_stream_width(self.pipe), "AudioLDM-2"
        self.pipe.set_progress_bar_config(disable=True)  # one bar over clips instead of one per call
        if self.spec.target_dim != width:
            raise RuntimeError(f"the mapper predicts {self.spec.target_dim}-d tokens but this {what} expects "
                               f"{width}-d: the mapper and the generate config do not belong together")

    def check_features(self, cavp_shape: tuple | None, tc_shape: tuple | None, source: str) -> None:
        """Refuse features that do not match what the mapper was trained on (other encoders or settings)."""
        s = self.spec
        if s.encoders == "clip":
            want = (s.clip_steps, s.clip_dim)
            if cavp_shape is None or tuple(cavp_shape) != want:
                raise RuntimeError(f"{source}: CLIP features {cavp_shape} do not match the V2A-Mapper's {want}: "
                                   "retrain (make train) or fix stages.yaml")
            return
        if s.encoders in ("cavp", "both"):
            want = (s.cavp_steps, s.cavp_dim)
            if cavp_shape is None or tuple(cavp_shape) != want:
                raise RuntimeError(f"{source}: CAVP features {cavp_shape} do not match the mapper's {want}; the mapper "
                                   "was trained for other encoders or settings: retrain (make train) or fix stages.yaml")
        if s.encoders in ("timechat", "both"):
            want = (s.timechat_windows, s.timechat_queries, s.timechat_dim)
            if tc_shape is None or tuple(tc_shape) != want:
                raise RuntimeError(f"{source}: TimeChat features {tc_shape} do not match the mapper's {want}; the "
                                   "mapper was trained for other encoders or settings: retrain or fix stages.yaml")

    def tokens(self, cavp: list, timechat: list, seeds: list[int] | None = None) -> torch.Tensor:
        """The mapper's tokens (B, 8, D). ``seeds``: one per clip for a diffusion mapper's initial noise (its own
        stream, not AudioLDM-2's); the autoregressive mapper ignores them."""
        def stack(arrs):
            if arrs[0] is None:
                return None
            return torch.from_numpy(np.stack(arrs).astype(np.float32)).to(self.device)

        gens = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
        with torch.inference_mode():
            return self.mapper.generate(stack(cavp), stack(timechat), generator=gens).float().cpu()  # (B, 8, D)

    def run(self, jobs: list[ClipJob], out_dir: Path, *, progress: bool = True) -> list[dict]:
        """Generate every job (batched across clips) and write each clip's outputs."""
        from tqdm import tqdm

        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        bar = tqdm(total=len(jobs), unit="clip", desc="generate", disable=not progress)
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b: b + self.batch_size]
            seeds = [clip_seed(self.p.seed, j.id) for j in batch]
            toks = self.tokens([j.cavp for j in batch], [j.timechat for j in batch],
                               [clip_seed(self.p.seed, f"{j.id}:mapper") for j in batch])
            prompts = [j.prompt if self.p.use_label else None for j in batch]
            if self.v2a:  # AudioLDM sees the CLAP embedding only (V2A-Mapper uses no text)
                audio = generate_from_clap(self.pipe, toks, seed=seeds, steps=self.p.steps, guidance=self.p.guidance,
                                           audio_seconds=self.p.audio_seconds, eta=self.p.eta)
            else:
                audio = generate_audio(self.pipe, toks, prompts, seed=seeds, negative_prompt=self.p.negative_prompt,
                                       negative_generated=self.p.negative_generated, steps=self.p.steps,
                                       guidance=self.p.guidance, audio_seconds=self.p.audio_seconds, eta=self.p.eta)
            for job, a, s in zip(batch, audio, seeds):
                a = crop_audio(a, self.p.crop_seconds) if self.p.crop_seconds else a
                written.append(write_clip(out_dir, job.id, a, video=job.video, ground_truth=job.ground_truth,
                                          prompt=job.prompt, info={"seed": s, **job.info}))
            bar.update(len(batch))
        bar.close()
        return written


def write_clip(out_dir: Path, cid: str, audio: np.ndarray, *, video: str | None, ground_truth: np.ndarray | None,
               prompt: str | None, info: dict) -> dict:
    """Write ``<cid>.wav``, ``<cid>.png`` (generated over ground truth), the video with its new soundtrack and
    ``<cid>.json`` (last: the clip is done). A video that cannot be written is recorded, the rest stands."""
    rec = {"id": cid, "prompt": prompt, **info, "seconds": round(len(audio) / 16000, 4)}
    write_wav(out_dir / f"{cid}.wav", audio)
    rec["wav"] = f"{cid}.wav"
    gt = None if ground_truth is None else ground_truth[: len(audio)]
    write_spectrogram_png(out_dir / f"{cid}.png", audio, gt, title=prompt or cid)
    rec["png"] = f"{cid}.png"
    if video is not None:
        ext = Path(video).suffix.lower()
        ext = ext if ext in MUX_EXTS else ".mkv"
        try:
            rec["mux"] = mux_audio(video, audio, out_dir / f"{cid}{ext}")
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
