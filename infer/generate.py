"""Generation: the trained mapper turns visual features into pooled AudioMAE tokens, AudioLDM-2 into sound.

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

from infer.audioldm2 import SCHEDULERS, build_pipeline, clip_seed, generate_audio, generated_stream_width
from infer.media_out import crop_audio, mux_audio, write_wav
from infer.spectrogram import write_spectrogram_png
from v2a.io import atomic_write_json

log = logging.getLogger(__name__)

MUX_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}


@dataclass
class GenerateParams:
    model: str = "full"  # AudioLDM-2: full (cvssp/audioldm2) | tiny
    checkpoint: str | None = "cvssp/audioldm2"
    half: bool = True
    steps: int = 100
    scheduler: str = "ddim"  # ddim (paper, 100 steps) | dpm++ (DPM-Solver++ 2M: ~25 steps, README speed section)
    guidance: float = 3.5
    negative_prompt: str = "low quality, average quality"
    negative_generated: str = "zeros"  # zeros (AudioLDM-2's unconditional AudioMAE) | prompt
    eta: float = 0.0
    audio_seconds: float = 10.24
    crop_seconds: float | None = None  # e.g. 8.0 for evaluation; None keeps audio_seconds
    seed: int = 0
    split: str = "test"  # the cache split the stage generates
    mapper: str = "best"  # best | last checkpoint of the train stage
    use_label: bool = True  # the class label as text prompt (paper); False = no text
    max_clips: int | None = None
    gpt_dim: int = 32  # tiny only
    t5_dim: int = 16  # tiny only
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "GenerateParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"generate params: unknown keys {sorted(unknown)}")
        p = cls(**d)
        if p.scheduler not in SCHEDULERS:
            raise ValueError(f"generate params: scheduler={p.scheduler!r} is not one of {SCHEDULERS}")
        return p

    def pipeline_params(self) -> dict:
        return {"model": self.model, "checkpoint": self.checkpoint, "half": self.half, "seed": self.seed,
                "gpt_dim": self.gpt_dim, "t5_dim": self.t5_dim, "scheduler": self.scheduler}


@dataclass
class ClipJob:
    id: str
    cavp: np.ndarray | None  # (40, D_cavp)
    timechat: np.ndarray | None  # (W, 32, D_tc)
    prompt: str | None
    video: str | None  # a path to mux into (None: no video written)
    ground_truth: np.ndarray | None = None  # 16 kHz, for the PNG
    info: dict = field(default_factory=dict)
    segments: int = 0  # > 0: whole-video mode, cavp/timechat hold one row per 10 s segment

    def parts(self) -> list[tuple[int, np.ndarray | None, np.ndarray | None]]:
        """(segment, cavp, timechat) per generation call: one, or one per segment."""
        if not self.segments:
            return [(0, self.cavp, self.timechat)]
        return [(k, None if self.cavp is None else self.cavp[k], None if self.timechat is None else self.timechat[k])
                for k in range(self.segments)]


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
        self.pipe = build_pipeline(params.pipeline_params(), device=device)
        self.pipe.set_progress_bar_config(disable=True)  # one bar over clips instead of one per call
        width = generated_stream_width(self.pipe)
        if self.spec.target_dim != width:
            raise RuntimeError(f"the mapper predicts {self.spec.target_dim}-d tokens but this AudioLDM-2 expects "
                               f"{width}-d: the mapper and the generate config do not belong together")

    def check_features(self, cavp_shape: tuple | None, tc_shape: tuple | None, source: str) -> None:
        """Refuse features that do not match what the mapper was trained on (other encoders or settings)."""
        s = self.spec
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

    def tokens(self, cavp: list, timechat: list) -> torch.Tensor:
        def stack(arrs):
            if arrs[0] is None:
                return None
            return torch.from_numpy(np.stack(arrs).astype(np.float32)).to(self.device)

        with torch.inference_mode():
            return self.mapper.generate(stack(cavp), stack(timechat)).float().cpu()  # (B, 8, D)

    def run(self, jobs: list[ClipJob], out_dir: Path, *, progress: bool = True,
            segment_seconds: float = 10.0) -> list[dict]:
        """Generate every job (batched across clips and segments) and write each clip when it is complete."""
        from tqdm import tqdm

        out_dir.mkdir(parents=True, exist_ok=True)
        items = [(ji, k, c, t) for ji, j in enumerate(jobs) for k, c, t in j.parts()]  # one AudioLDM-2 sample each
        pieces: dict[int, dict[int, np.ndarray]] = {}
        written = []
        bar = tqdm(total=len(items), unit="clip" if len(items) == len(jobs) else "segment", desc="generate",
                   disable=not progress)
        for b in range(0, len(items), self.batch_size):
            batch = items[b: b + self.batch_size]
            toks = self.tokens([c for _, _, c, _ in batch], [t for _, _, _, t in batch])
            prompts = [jobs[ji].prompt if self.p.use_label else None for ji, *_ in batch]
            seeds = [clip_seed(self.p.seed, jobs[ji].id) + k for ji, k, *_ in batch]
            audio = generate_audio(self.pipe, toks, prompts, seed=seeds, negative_prompt=self.p.negative_prompt,
                                   negative_generated=self.p.negative_generated, steps=self.p.steps,
                                   guidance=self.p.guidance, audio_seconds=self.p.audio_seconds, eta=self.p.eta)
            for (ji, k, _, _), a in zip(batch, audio):
                pieces.setdefault(ji, {})[k] = a
                job = jobs[ji]
                if len(pieces[ji]) == max(1, job.segments):
                    got = pieces.pop(ji)
                    parts = [got[i] for i in range(max(1, job.segments))]
                    seg = int(round(segment_seconds * 16000))
                    # whole-video mode: 10 s from each segment, the last one whole (AudioLDM-2 makes 10.24 s)
                    full = parts[0] if len(parts) == 1 else np.concatenate([p[:seg] for p in parts[:-1]] + parts[-1:])
                    written.append(self.write_clip(job, full, out_dir))
                bar.update(1)
        bar.close()
        return written

    def write_clip(self, job: ClipJob, audio: np.ndarray, out_dir: Path) -> dict:
        if self.p.crop_seconds:
            audio = crop_audio(audio, self.p.crop_seconds)
        rec = {"id": job.id, "prompt": job.prompt, "seed": clip_seed(self.p.seed, job.id),
               "seconds": round(len(audio) / 16000, 4), **job.info}
        write_wav(out_dir / f"{job.id}.wav", audio)
        rec["wav"] = f"{job.id}.wav"
        gt = None if job.ground_truth is None else job.ground_truth[: len(audio)]
        write_spectrogram_png(out_dir / f"{job.id}.png", audio, gt, title=job.prompt or job.id)
        rec["png"] = f"{job.id}.png"
        if job.video is not None:
            ext = Path(job.video).suffix.lower()
            ext = ext if ext in MUX_EXTS else ".mkv"
            try:
                rec["mux"] = mux_audio(job.video, audio, out_dir / f"{job.id}{ext}")
                rec["video"] = f"{job.id}{ext}"
            except (ValueError, RuntimeError, OSError) as e:  # the wav and png stand; say why the video did not
                rec["video_error"] = f"{type(e).__name__}: {e}"
                log.error("%s: could not write the video with its new soundtrack: %s", job.id, e)
        atomic_write_json(out_dir / f"{job.id}.json", rec)  # last: the clip is done
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
