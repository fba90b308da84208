"""``MFMMapperPipeline``: the trained mapper as a portable model, in the style of a diffusers pipeline.

One object holds what turns a video into sound: the visual encoders the mapper was trained on (built from their
recorded params through ``frozen.cavp.build`` / ``frozen.timechat.build``, lazily), the GPT-2 mapper
(``trainer.mapper``) and AudioLDM-2 (``infer.audioldm2``)::

    pipe = MFMMapperPipeline.from_pretrained("exported/folder")      # or a hub id "owner/name"
    out = pipe("clip.mp4", prompt="dog barking", seed=0, output_dir="out")
    out.audios[0], out.sample_rate                                  # (samples,) float32, 16000

``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` use the folder layout of ``infer.hub``. The call runs
numbered steps: check the inputs, decode and encode each video (10 s windows), map features to AudioMAE tokens,
generate each window with AudioLDM-2, join the windows (equal-power crossfade), write the videos when asked.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from infer import hub
from infer.audioldm2 import DEFAULT_NEGATIVE_PROMPT, SAMPLE_RATE, build_pipeline, clip_seed, generate_audio, \
    generated_stream_width
from infer.windows import crossfade_join, plan_windows
from v2a.io import atomic_path, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)


@dataclass
class GenerationDefaults:
    """What a call uses when an argument is not given (the paper's values unless the run was configured else)."""

    steps: int = 100
    guidance: float = 3.5
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    negative_generated: str = "zeros"
    eta: float = 0.0
    audio_seconds: float = 10.24  # AudioLDM-2's length per window; also the default length of a call
    seed: int = 0
    overlap: float = 2.0  # seconds shared by consecutive 10 s windows (long videos)
    max_seconds: float = 600.0  # whole=True covers at most this much of a video

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationDefaults":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


@dataclass
class PreparedVideo:
    """One video ready for generation: features per window (K, ...), window starts (s), output length."""

    id: str
    source: str | None
    features: dict[str, np.ndarray]  # name -> (K, ...) float32
    starts: list[float]
    samples: int  # length of the audio to return
    ground_truth: np.ndarray | None = None  # the video's own audio (16 kHz), for spectrograms
    info: dict = field(default_factory=dict)


@dataclass
class MFMMapperOutput:
    audios: list[np.ndarray]  # one (samples,) float32 waveform per video
    sample_rate: int
    videos: list[Path | None]  # the videos with their new soundtrack (when output_dir was given)
    clips: list[PreparedVideo]


def _encoder_module(name: str):
    """The ``frozen`` module of a visual encoder (imported by name here, so that code fingerprints see it)."""
    from frozen import cavp, timechat

    return {"cavp": cavp, "timechat": timechat}[name]


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


def _frames_params(d: dict):
    from pipeline.frames import FramesParams

    return FramesParams.from_dict({k: v for k, v in d.items() if k in FramesParams.__dataclass_fields__})


class MFMMapperPipeline:
    def __init__(self, mapper, audioldm2, *, encoders: dict, audioldm2_params: dict,
                 defaults: GenerationDefaults | None = None, training: dict | None = None, device: str = "cpu"):
        self.mapper, self.audioldm2 = mapper.eval(), audioldm2
        self.encoders_record = encoders  # infer.hub layout: {"frames": {...}, "encoders": {...}, "target": ...}
        self.audioldm2_params = dict(audioldm2_params)
        self.defaults = defaults or GenerationDefaults()
        self.training = training or {}
        self.device = device
        self.frames = _frames_params(encoders["frames"])
        self._built: dict = {}
        self.audioldm2.set_progress_bar_config(disable=True)
        width = generated_stream_width(audioldm2)
        if mapper.spec.target_dim != width:
            raise ValueError(f"the mapper predicts {mapper.spec.target_dim}-d tokens but this AudioLDM-2 expects "
                             f"{width}-d: they do not belong together")

    @property
    def encoder_names(self) -> list[str]:
        return {"both": ["cavp", "timechat"], "cavp": ["cavp"], "timechat": ["timechat"]}[self.mapper.spec.encoders]

    # ------------------------------------------------------------------------------------------------------------
    # loading and saving
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device: str = "auto", encoders: dict | None = None,
                        audioldm2: dict | None = None, revision: str | None = None, token: str | None = None,
                        cache_dir: str | Path | None = None) -> "MFMMapperPipeline":
        """Load a folder written by ``save_pretrained`` (or ``v2a export``), or a hub repo holding one.

        encoders: per encoder, params that replace the recorded ones (e.g. where the weights lie on this machine:
        ``{"timechat": {"eva_vit": "/w/eva_vit_g.pth"}}``); anything that changes what the encoder computes is
        refused with the difference named. audioldm2: params that replace the recorded AudioLDM-2 ones (e.g. a
        local ``save_pretrained`` folder of cvssp/audioldm2).
        """
        from safetensors.torch import load_file

        from v2a.dist import pick_device
        from trainer.config import MapperSpec
        from trainer.mapper import Mapper

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
        gen = read_json(folder / hub.FILES["generation"])
        training = read_json(folder / hub.FILES["training"]) if (folder / hub.FILES["training"]).is_file() else {}
        device = pick_device(device)
        mapper = Mapper(MapperSpec.from_dict(read_json(folder / hub.FILES["mapper_config"])))
        mapper.load_state_dict(load_file(str(folder / hub.FILES["mapper_weights"])), strict=True)
        params = {**gen["audioldm2"], **(audioldm2 or {})}
        return cls(mapper.to(device), build_pipeline(params, device=device), encoders=record,
                   audioldm2_params=params, defaults=GenerationDefaults.from_dict(gen["defaults"]),
                   training=training, device=device)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the pipeline folder (see ``infer.hub``); every file atomically. Returns the folder."""
        return save_folder(folder, self.mapper, encoders=self.encoders_record, audioldm2_params=self.audioldm2_params,
                           defaults=self.defaults, training=self.training)

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

    def check_span(self, duration: float | None, whole: bool) -> None:
        if whole and duration is not None:
            raise ValueError("give duration=... or whole=True, not both")
        if duration is not None and not 0 < duration <= self.defaults.max_seconds:
            raise ValueError(f"duration={duration}: must be > 0 and at most {self.defaults.max_seconds} s")

    def prepare(self, path: str | Path, *, duration: float | None = None, whole: bool = False,
                clip_id: str | None = None) -> PreparedVideo:
        """Decode ``path`` and encode its windows. Raises ``pipeline.media.MediaError`` for a file that is not a
        usable video. ``whole``: the video's whole length (up to ``defaults.max_seconds``); ``duration``: that
        many seconds (windows when longer than ``defaults.audio_seconds``); neither: one 10 s window."""
        from infer.media_out import video_span
        from pipeline.media import decode_clip, probe

        self.check_span(duration, whole)
        fp, d = self.frames, self.defaults
        probe(str(path))  # a file that is not a video fails here, with its reason
        if whole:
            start, end = video_span(path)
            seconds = min(end - start, d.max_seconds)
        else:
            seconds = d.audio_seconds if duration is None else float(duration)
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
        return PreparedVideo(id=clip_id or Path(path).stem, source=str(path),
                             features={k: np.stack(v) for k, v in feats.items()}, starts=starts, samples=samples,
                             ground_truth=gt, info={"windows": len(starts), "video_seconds": clip.duration})

    def tokens(self, features: list[dict[str, np.ndarray]]) -> torch.Tensor:
        """Per window {encoder: (...)} -> the mapper's (N, 8, D) pooled-AudioMAE tokens."""
        def stack(name):
            if name not in self.encoder_names:
                return None
            return torch.from_numpy(np.stack([f[name] for f in features]).astype(np.float32)).to(self.device)

        with torch.inference_mode():
            return self.mapper.generate(stack("cavp"), stack("timechat")).float().cpu()

    def generate(self, clips: list[PreparedVideo], prompts: Sequence[str | None], seeds: Sequence[int], *,
                 negative_prompt: str | None = None, steps: int | None = None, guidance: float | None = None,
                 batch_size: int = 4, progress: bool = False) -> list[np.ndarray]:
        """Every window of every clip (batched across clips), joined per clip -> one (samples,) array each.
        Window k of a clip uses seed ``seeds[clip] + k``."""
        from tqdm import tqdm

        d = self.defaults
        items = [(ci, k) for ci, c in enumerate(clips) for k in range(len(c.starts))]
        pieces: dict[tuple[int, int], np.ndarray] = {}
        bar = tqdm(total=len(items), unit="window", desc="generate", disable=not progress)
        for b in range(0, len(items), batch_size):
            batch = items[b: b + batch_size]
            toks = self.tokens([{n: a[k] for n, a in clips[ci].features.items()} for ci, k in batch])
            audio = generate_audio(
                self.audioldm2, toks, [prompts[ci] for ci, _ in batch], seed=[int(seeds[ci]) + k for ci, k in batch],
                negative_prompt=d.negative_prompt if negative_prompt is None else negative_prompt,
                negative_generated=d.negative_generated, steps=d.steps if steps is None else int(steps),
                guidance=d.guidance if guidance is None else float(guidance), audio_seconds=d.audio_seconds,
                eta=d.eta)  # (b, samples)
            pieces.update(zip(batch, audio))
            bar.update(len(batch))
        bar.close()
        span = int(round(self.frames.seconds * SAMPLE_RATE))
        out = []
        for ci, c in enumerate(clips):
            got = [pieces[(ci, k)] for k in range(len(c.starts))]
            if len(got) == 1:
                out.append(np.asarray(got[0][: c.samples], dtype=np.float32))
            else:
                out.append(crossfade_join(got, [int(round(s * SAMPLE_RATE)) for s in c.starts], span, c.samples))
        return out

    def __call__(self, video: str | Path | Sequence[str | Path], prompt: str | Sequence[str | None] | None = None, *,
                 negative_prompt: str | None = None, steps: int | None = None, guidance: float | None = None,
                 seed: int | Sequence[int] | None = None, duration: float | None = None, whole: bool = False,
                 output_dir: str | Path | None = None, batch_size: int = 4,
                 progress: bool = False) -> MFMMapperOutput:
        """Sound for one video or a list of videos.

        prompt: a text prompt (the class label, e.g. ``"dog barking"``) for all videos, or one per video.
        seed: an int (video ``v`` gets ``clip_seed(seed, its file stem)``, so its sound does not depend on the
        batch) or one int per video. duration: seconds of sound (default ``defaults.audio_seconds``, the 10 s
        window); whole=True: the video's whole length, in overlapping crossfaded windows (not with duration).
        output_dir: also write ``<stem><ext>`` there: the video stream copied, the new sound as its soundtrack.
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
        base = self.defaults.seed if seed is None else seed
        if isinstance(base, (int, np.integer)):
            seeds = [clip_seed(int(base), p.stem) for p in paths]
        elif len(base) == n:
            seeds = [int(s) for s in base]
        else:
            raise ValueError(f"seed has {len(base)} values for {n} videos: give one int, or one per video")
        # 2. decode and encode every window of every video
        clips = [self.prepare(p, duration=duration, whole=whole) for p in paths]
        # 3-4. tokens -> AudioLDM-2 per window, windows joined with an equal-power crossfade
        audios = self.generate(clips, prompts, seeds, negative_prompt=negative_prompt, steps=steps,
                               guidance=guidance, batch_size=batch_size, progress=progress)
        # 5. the videos with their new soundtrack
        videos: list[Path | None] = [None] * n
        if output_dir is not None:
            from infer.generate import MUX_EXTS
            from infer.media_out import mux_audio

            Path(output_dir).mkdir(parents=True, exist_ok=True)
            for i, (p, a) in enumerate(zip(paths, audios)):
                ext = p.suffix.lower() if p.suffix.lower() in MUX_EXTS else ".mkv"
                videos[i] = Path(output_dir) / f"{p.stem}{ext}"
                mux_audio(p, a, videos[i])
        return MFMMapperOutput(audios=audios, sample_rate=SAMPLE_RATE, videos=videos, clips=clips)


def save_folder(folder: str | Path, mapper, *, encoders: dict, audioldm2_params: dict, defaults: GenerationDefaults,
                training: dict) -> Path:
    """The pipeline folder from its parts (``v2a export`` writes it without building AudioLDM-2): mapper weights
    and config, encoder record, generation config, training facts, model card; ``model_index.json`` last."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "mapper").mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / hub.FILES["mapper_weights"]) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}, str(tmp),
                  metadata={"format": "pt"})
    atomic_write_json(folder / hub.FILES["mapper_config"], mapper.spec.to_dict())
    atomic_write_json(folder / hub.FILES["encoders"], encoders)
    generation = {"audioldm2": audioldm2_params, "defaults": asdict(defaults)}
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
