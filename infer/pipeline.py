"""``MFMMapperPipeline``: the trained mapper as a portable model, in the style of a diffusers pipeline.

One object holds what turns a video into sound: the visual encoders the mapper was trained on (built from their
recorded params through ``frozen.cavp.build`` / ``frozen.timechat.build`` / ``frozen.clip.build``, lazily), the
mapper (any family: ``trainer.mapper.mapper_from_spec``) and the model its output conditions (AudioLDM-2, or
AudioLDM for a V2A-Mapper), joined in the one generation core (``infer.core``)::

    pipe = MFMMapperPipeline.from_pretrained("exported/folder")      # or a hub id "owner/name"
    out = pipe("clip.mp4", prompt="dog barking", seed=0, output_dir="out")
    out.audios[0], out.sample_rate                                  # (samples,) float32, 16000
    pipe("clip.mp4").labels[0]    # prompt="auto" (the default): [(VGGSound class, score)] x 3, the first the prompt

How long the sound is (the same rule for ``pipe()``, ``v2a generate`` and the app; never longer than the video):
the default is the first window, ``settings.audio_seconds`` (AudioLDM-2's 10.24 s for the first 10 s), cut to the
video's length when the video is shorter; ``duration=d``: d seconds (overlapping crossfaded 10 s windows when longer
than one window), again at most the video's length; ``whole=True``: the whole video, up to ``settings.max_seconds``.

``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` use the folder layout of ``infer.hub``. The call runs
numbered steps: check the inputs, decode and encode each video (10 s windows), generate every window (mapper, then
AudioLDM(-2)) and join each video's windows (equal-power crossfade), write the videos when asked.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import v2a.dist  # noqa: F401,I001 (first: on macOS it enables PyTorch's MPS fallback before torch is loaded)
import numpy as np
import torch

from infer import hub
from infer.audioldm2 import SAMPLE_RATE, clip_seed
from infer.core import Clip, GenerationCore, build_generator, generator_for
from infer.params import GenerationSettings
from infer.windows import plan_windows
from v2a.io import atomic_path, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

PreparedVideo = Clip  # a video decoded and encoded, ready for generation (its windows' features)


@dataclass
class MFMMapperOutput:
    audios: list[np.ndarray]  # one (samples,) float32 waveform per video
    sample_rate: int
    videos: list[Path | None]  # the videos with their new soundtrack (when output_dir was given)
    clips: list[Clip]  # what was generated per video: id, prompt, seed, window starts, features
    labels: list[list[tuple[str, float]] | None] = field(default_factory=list)  # prompt="auto": top 3 per video


def clip_ids(paths: Sequence[Path]) -> list[str]:
    """File-name-safe clip ids from the videos' stems, unique within the list (``a``, ``a_1``, ...)."""
    taken: set[str] = set()
    out = []
    for p in paths:
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(p).stem).strip("_") or "clip"
        name, n = base[:120], 1
        while name in taken:
            name, n = f"{base[:110]}_{n}", n + 1
        taken.add(name)
        out.append(name)
    return out


def _encoder_module(name: str):
    """The ``frozen`` module of a visual encoder (imported by name here, so that code fingerprints see it)."""
    from frozen import cavp, clip, timechat

    return {"cavp": cavp, "timechat": timechat, "clip": clip}[name]


def as_stored(frames: np.ndarray, n_frames: int, fp) -> np.ndarray:
    """The frames exactly as the cache would store them (its codec), so features match the training data."""
    from pipeline.frames import store_frames
    from pipeline.framestore import decode_frames

    out = np.zeros((fp.n_frames, *frames.shape[1:]), dtype=frames.dtype)  # (40, 224, 224, 3), zeros after n_frames
    if n_frames == 0:
        return out
    stored, ext = store_frames(frames[:n_frames], fp)
    out[:n_frames] = decode_frames(stored, ext)
    return out


def check_span(settings: GenerationSettings, duration: float | None, whole: bool) -> None:
    """``duration`` and ``whole`` are not both given, and ``duration`` is within ``settings.max_seconds``."""
    if whole and duration is not None:
        raise ValueError("give duration=... or whole=True, not both")
    if duration is not None and not 0 < duration <= settings.max_seconds:
        raise ValueError(f"duration={duration}: must be > 0 and at most {settings.max_seconds} s")


def _frames_params(d: dict):
    from pipeline.frames import FramesParams

    return FramesParams.from_dict({k: v for k, v in d.items() if k in FramesParams.__dataclass_fields__})


class MFMMapperPipeline:
    def __init__(self, mapper, audio_model, *, encoders: dict, model_params: dict,
                 settings: GenerationSettings | None = None, training: dict | None = None, device: str = "cpu"):
        self.core = GenerationCore(mapper, audio_model, device)
        self.encoders_record = encoders  # infer.hub layout: {"frames": {...}, "encoders": {...}, "target": ...}
        self.model_params = dict(model_params)  # what builds audio_model (frozen/audioldm2.py, frozen/audioldm.py)
        self.settings = settings or GenerationSettings()
        self.training = training or {}
        self.device = device
        self.frames = _frames_params(encoders["frames"])
        self._built: dict = {}
        self._labelers: dict = {}
        self.weights_config = None  # a Config whose weights folder resolves manifest names (label_model)

    @property
    def mapper(self):
        return self.core.mapper

    @property
    def audio_model(self):
        """The diffusers pipeline: ``AudioLDM2Pipeline``, or ``AudioLDMPipeline`` for a V2A-Mapper."""
        return self.core.audio_model

    @property
    def generator(self) -> str:
        """``audioldm2`` or ``audioldm`` (V2A-Mapper)."""
        return self.core.generator

    @property
    def encoder_names(self) -> list[str]:
        return self.core.feature_names

    # ------------------------------------------------------------------------------------------------------------
    # loading and saving
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device: str = "auto", encoders: dict | None = None,
                        audio_model: dict | None = None, revision: str | None = None, token: str | None = None,
                        cache_dir: str | Path | None = None) -> "MFMMapperPipeline":
        """Load a folder written by ``save_pretrained`` (or ``v2a export``), or a hub repo holding one.

        encoders: per encoder, params that replace the recorded ones (e.g. where the weights lie on this machine:
        ``{"timechat": {"eva_vit": "/w/eva_vit_g.pth"}}``); anything that changes what the encoder computes is
        refused with the difference named. audio_model: params that replace the recorded AudioLDM-2 (AudioLDM)
        ones (e.g. a local ``save_pretrained`` folder of cvssp/audioldm2).
        """
        from safetensors.torch import load_file

        from trainer.mapper import mapper_from_spec
        from v2a.dist import pick_device

        folder = hub.resolve_folder(name_or_path, revision=revision, token=token, cache_dir=cache_dir)
        index = read_json(folder / hub.INDEX)
        if index.get("_class_name") != hub.CLASS_NAME or int(index.get("format", 0)) > hub.FORMAT:
            raise ValueError(f"{folder}: {hub.INDEX} describes {index.get('_class_name')} format "
                             f"{index.get('format')}; this code reads {hub.CLASS_NAME} up to format {hub.FORMAT}")
        record = read_json(folder / hub.FILES["encoders"])
        if encoders:
            configured = {**record, "encoders": {n: hub.encoder_record({**e["params"], **encoders.get(n, {})},
                                                                       e["checkpoints"])
                                                 for n, e in record["encoders"].items()}}
            hub.check_encoders(record, configured, f"in {folder}")
            record = configured
        generator, model_params, settings = hub.read_generation(read_json(folder / hub.FILES["generation"]))
        training = read_json(folder / hub.FILES["training"]) if (folder / hub.FILES["training"]).is_file() else {}
        device = pick_device(device)
        try:
            mapper = mapper_from_spec(read_json(folder / hub.FILES["mapper_config"]))
        except (ValueError, TypeError) as e:  # an unknown kind, a spec of another family's fields: refused, named
            raise ValueError(f"{folder}: {hub.FILES['mapper_config']}: {e}") from None
        mapper.load_state_dict(load_file(str(folder / hub.FILES["mapper_weights"])), strict=True)
        if generator_for(mapper.spec.kind) != generator:
            raise ValueError(f"{folder}: its {hub.FILES['generation']} names {generator} but its {mapper.spec.kind} "
                             f"mapper feeds {generator_for(mapper.spec.kind)}")
        params = {**model_params, **(audio_model or {})}
        return cls(mapper.to(device), build_generator(generator, params, device), encoders=record, model_params=params,
                   settings=settings, training=training, device=device)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the pipeline folder (see ``infer.hub``); every file atomically. Returns the folder."""
        return save_folder(folder, self.mapper, encoders=self.encoders_record, model_params=self.model_params,
                           settings=self.settings, training=self.training)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload MFM-Mapper pipeline", revision: str | None = None,
                    create_pr: bool = False):
        """``save_pretrained`` into a temporary folder and upload it (``push_folder``). Returns the CommitInfo."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return push_folder(tmp, repo_id, token=token, private=private, commit_message=commit_message,
                               revision=revision, create_pr=create_pr)

    # ------------------------------------------------------------------------------------------------------------
    # the steps of a call
    # ------------------------------------------------------------------------------------------------------------
    def encoder(self, name: str):
        """The frozen encoder ``name``, built on first use from its recorded params."""
        if name not in self._built:
            params = {k: v for k, v in self.encoders_record["encoders"][name]["params"].items() if k != "dtype"}
            params["half"] = bool(params.get("half")) and str(self.device).startswith("cuda")
            try:
                self._built[name] = _encoder_module(name).build(params, str(self.device), grid=self.frames.grid)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e}; point the pipeline at the weights on this machine, e.g. "
                                        f"from_pretrained(..., encoders={{'{name}': {{...}}}}) or stages.yaml") from e
        return self._built[name]

    def encode_frames(self, frames: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
        """(40, 224, 224, 3) uint8 frames as the cache stores them -> {encoder: features}, rounded to the cache's
        storage dtype as the mapper saw them in training."""
        out = {}
        for name in self.encoder_names:
            dtype = self.encoders_record["encoders"][name]["params"].get("dtype", "float16")
            y = self.encoder(name).encode(torch.from_numpy(frames[None]), torch.tensor([n_frames]))[0].numpy()
            out[name] = y.astype(dtype).astype(np.float32)
        return out

    def labeler(self):
        """The zero-shot labeler of ``prompt="auto"`` (infer/labels.py) on ``settings.label_model``, built on first
        use."""
        name = self.settings.label_model
        if not name:
            raise ValueError("prompt 'auto' needs a CLIP to label the video, but the settings have label_model: null; "
                             "give a prompt, or set label_model (e.g. openai/clip-vit-large-patch14)")
        if name not in self._labelers:
            from frozen.clip import build_zero_shot
            from infer.labels import AutoLabeler, resolve_label_model

            self._labelers[name] = AutoLabeler(build_zero_shot(resolve_label_model(name, self.weights_config),
                                                               self.device))
        return self._labelers[name]

    def span_seconds(self, path: str | Path, duration: float | None = None, whole: bool = False) -> float:
        """Seconds of sound for ``path`` (the module docstring's rule): never longer than the video."""
        from infer.media_out import video_span
        from pipeline.media import probe

        self.check_span(duration, whole)
        d = self.settings
        if whole:
            start, end = video_span(path)
            return min(end - start, d.max_seconds)
        want = d.audio_seconds if duration is None else float(duration)
        known = probe(str(path)).duration  # container metadata: cheap; exact only when it matters
        if known and known >= want + 1.0:
            return want
        start, end = video_span(path)
        return min(want, end - start)

    def check_span(self, duration: float | None, whole: bool) -> None:
        check_span(self.settings, duration, whole)

    def prepare(self, path: str | Path, *, duration: float | None = None, whole: bool = False,
                clip_id: str | None = None, label: bool = False) -> Clip:
        """Decode ``path`` and encode its windows (the clip's prompt and seed are the caller's to set). Raises
        ``pipeline.media.MediaError`` for a file that is not a usable video. The length: :meth:`span_seconds`
        (``whole``: the whole video; ``duration``: that many seconds, in windows when longer than
        ``settings.audio_seconds``; neither: one window; never longer than the video). ``label``: also score the
        decoded frames against the VGGSound classes (``info["labels"]``: the top 3, best first)."""
        from pipeline.media import decode_clip, probe

        self.check_span(duration, whole)
        fp, d = self.frames, self.settings
        probe(str(path))  # a file that is not a video fails here, with its reason
        seconds = self.span_seconds(path, duration, whole)
        windowed = whole or seconds > d.audio_seconds
        starts = plan_windows(seconds, window=fp.seconds, overlap=d.overlap, fps=fp.fps) if windowed else [0.0]
        clip = decode_clip(str(path), fps=fp.fps, seconds=starts[-1] + fp.seconds, size=fp.size,
                           sample_rate=fp.sample_rate, max_side=fp.max_side, silence_dbfs=fp.silence_dbfs)
        per = fp.n_frames  # 40 frames a window
        feats: dict[str, list] = {}
        for s in starts:
            i0 = int(round(s * fp.fps))
            n_k = max(0, min(per, clip.n_frames - i0))
            for name, y in self.encode_frames(as_stored(clip.frames[i0: i0 + per], n_k, fp), n_k).items():
                feats.setdefault(name, []).append(y)
        samples = int(round(seconds * SAMPLE_RATE))
        gt = clip.audio[: min(clip.audio_len, samples)] if clip.has_audio and not clip.audio_silent else None
        info = {"windows": len(starts), "video_seconds": clip.duration}
        if label:
            info["labels"] = self.labeler().top(clip.frames, clip.n_frames)
        return Clip(id=clip_id or clip_ids([Path(path)])[0], features={k: np.stack(v) for k, v in feats.items()},
                    starts=starts, samples=samples, window_seconds=fp.seconds, source=str(path), ground_truth=gt,
                    info=info)

    def tokens(self, features: list[dict[str, np.ndarray]]) -> torch.Tensor:
        """Per window {encoder: (...)} -> the mapper's (N, n_tokens, D) output (seeded as window 0 of seed 0)."""
        return self.core.tokens(features, [0] * len(features))

    def generate(self, clips: list[Clip], settings: GenerationSettings | None = None, *, batch_size: int = 4,
                 progress: bool = False) -> list[np.ndarray]:
        """Every window of every clip (batched across clips), joined per clip -> one (samples,) array each: the
        generation core (``infer.core``) with ``settings`` (default: the pipeline's)."""
        return self.core.generate(clips, settings or self.settings, batch_size=batch_size, progress=progress)

    def __call__(self, video: str | Path | Sequence[str | Path], prompt: str | Sequence[str | None] | None = "auto", *,
                 negative_prompt: str | None = None, steps: int | None = None, guidance: float | None = None,
                 seed: int | Sequence[int] | None = None, duration: float | None = None, whole: bool = False,
                 output_dir: str | Path | None = None, batch_size: int = 4,
                 progress: bool = False) -> MFMMapperOutput:
        """Sound for one video or a list of videos.

        prompt: a text prompt (the class label, e.g. ``"dog barking"``) for all videos, or one per video;
        ``"auto"`` (the default): the best of the 309 VGGSound classes for the video's frames by CLIP zero-shot
        (``settings.label_model``; the top 3 with their scores are ``out.labels``); ``None`` or ``""``: no prompt.
        AudioLDM, a V2A-Mapper's generator, takes no text (and no label is computed). seed: an int (video ``v`` gets ``clip_seed(seed, its clip id)``, the
        id being its file stem made file-name safe and unique in the call, so its sound does not depend on the
        batch) or one int per video; window ``k`` of a long video uses that + k. duration: seconds of sound
        (default ``settings.audio_seconds``, the 10 s window); whole=True: the video's whole length, in overlapping
        crossfaded windows (not with duration); never longer than the video (the module docstring). negative_prompt, steps, guidance: replace the pipeline's
        ``settings`` for this call. output_dir: also write ``<clip id><ext>`` there: the video stream copied, the
        new sound as its soundtrack.
        """
        # 1. check the inputs
        paths = [Path(video)] if isinstance(video, (str, Path)) else [Path(v) for v in video]
        n = len(paths)
        if not n:
            raise ValueError("video: give at least one video file")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"video: {', '.join(missing[:3])} does not exist")
        prompts = [prompt] * n if prompt is None or isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"prompt has {len(prompts)} values for {n} videos: give one, or one per video")
        self.check_span(duration, whole)
        from infer.labels import AUTO, format_labels
        from pipeline.media import probe

        for p in paths:  # every file is a usable video before anything is decoded or built
            probe(str(p))
        if not self.core.uses_text:
            if any(p and p != AUTO for p in prompts):
                log.warning("AudioLDM (V2A-Mapper) is conditioned on the CLAP embedding only: the prompt is unused")
            prompts = [None] * n
        settings = self.settings.replace(negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                         seed=seed if isinstance(seed, (int, np.integer)) else None)
        ids = clip_ids(paths)
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [clip_seed(settings.seed, cid) for cid in ids]
        elif len(seed) == n:
            seeds = [int(s) for s in seed]
        else:
            raise ValueError(f"seed has {len(seed)} values for {n} videos: give one int, or one per video")
        # 2. decode and encode every window of every video (and label those whose prompt is "auto")
        clips = []
        for p, cid, pr, s in zip(paths, ids, prompts, seeds):
            c = self.prepare(p, duration=duration, whole=whole, clip_id=cid, label=pr == AUTO)
            labels = c.info.get("labels")
            if labels:
                log.info("%s: prompt %r (auto: %s)", cid, labels[0][0], format_labels(labels))
            clips.append(dataclasses.replace(c, prompt=labels[0][0] if labels else (pr or None), seed=s))
        # 3-4. the mapper and AudioLDM(-2) per window (batched across videos), windows joined with a crossfade
        audios = self.generate(clips, settings, batch_size=batch_size, progress=progress)
        # 5. the videos with their new soundtrack
        videos: list[Path | None] = [None] * n
        if output_dir is not None:
            from infer.generate import MUX_EXTS
            from infer.media_out import mux_audio

            Path(output_dir).mkdir(parents=True, exist_ok=True)
            for i, (p, c, a) in enumerate(zip(paths, clips, audios)):
                ext = p.suffix.lower() if p.suffix.lower() in MUX_EXTS else ".mkv"
                videos[i] = Path(output_dir) / f"{c.id}{ext}"
                mux_audio(p, a, videos[i], seconds=len(a) / SAMPLE_RATE if duration is not None else None)
        return MFMMapperOutput(audios=audios, sample_rate=SAMPLE_RATE, videos=videos, clips=clips,
                               labels=[c.info.get("labels") for c in clips])


def save_folder(folder: str | Path, mapper, *, encoders: dict, model_params: dict, settings: GenerationSettings,
                training: dict) -> Path:
    """The pipeline folder from its parts (``v2a export`` writes it without building AudioLDM(-2)): mapper weights
    and config, encoder record, generation config, training facts, model card; ``model_index.json`` last."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "mapper").mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / hub.FILES["mapper_weights"]) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}, str(tmp),
                  metadata={"format": "pt"})
    atomic_write_json(folder / hub.FILES["mapper_config"], mapper.spec.to_dict())
    atomic_write_json(folder / hub.FILES["encoders"], encoders)
    generation = hub.generation_record(generator_for(mapper.spec.kind), model_params, settings)
    atomic_write_json(folder / hub.FILES["generation"], generation)
    atomic_write_json(folder / hub.FILES["training"], training)
    atomic_write_text(folder / hub.FILES["card"], hub.model_card(training, encoders, generation))
    atomic_write_json(folder / hub.INDEX, {"_class_name": hub.CLASS_NAME, "format": hub.FORMAT, "files": hub.FILES})
    return folder


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload MFM-Mapper pipeline", revision: str | None = None,
                create_pr: bool = False):
    """Upload a pipeline folder with ``huggingface_hub.HfApi`` (the repo is created when missing)."""
    from huggingface_hub import HfApi

    if not (Path(folder) / hub.INDEX).is_file():
        raise FileNotFoundError(f"{folder} holds no {hub.INDEX}: not a pipeline folder")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                             commit_message=commit_message, create_pr=create_pr)
