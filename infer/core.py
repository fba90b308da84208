"""The one generation core: clips (their features, prompt and seed) + ``GenerationSettings`` -> audio.

The generate stage (infer/generate.py), ``v2a generate`` (infer/videos.py), ``MFMMapperPipeline`` and the web page
all call :meth:`GenerationCore.generate`; it works for every mapper family (the checkpoint's ``kind``):

- ``autoregressive`` (MFM-Mapper), ``diffusion`` (Diff-Mapper): CAVP and/or TimeChat -> 8 pooled AudioMAE tokens
  -> AudioLDM-2 (the label as its text prompt);
- ``v2a_regression``, ``v2a_diffusion`` (V2A-Mapper): CLIP -> one CLAP embedding -> AudioLDM (no text).

A clip is one or more 10 s windows (long videos). Seeding, one rule for every entry point: clip ``c`` has a seed
``s`` (``clip_seed(settings.seed, c's id)`` unless the caller gives one); its window ``k`` has ``window_seed(s, k)
= s + k``; that window's AudioLDM(-2) noise comes from a CPU ``torch.Generator`` seeded with it and a diffusion
mapper's initial noise from one seeded with ``mapper_seed`` of it. Every window has its own generators, so its
sound does not depend on the batch it is in (up to the float rounding of batched matrix products). Windows of all
clips are batched together, ``batch_size`` at a time, in order; a clip's windows are joined with an equal-power
crossfade (infer/windows.py) and the audio cut to the clip's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from infer.audioldm import clap_width, generate_from_clap
from infer.audioldm2 import SAMPLE_RATE, clip_seed, generate_audio, generated_stream_width, set_scheduler
from infer.params import GenerationSettings
from infer.windows import crossfade_join

log = logging.getLogger(__name__)


def window_seed(seed: int, k: int) -> int:
    """The seed of window ``k`` of a clip whose seed is ``seed`` (window 0: the clip's own seed)."""
    return int(seed) + int(k)


def mapper_seed(seed: int) -> int:
    """The seed of a diffusion mapper's noise for the window seeded ``seed`` (a stream apart from AudioLDM's)."""
    return clip_seed(seed, "mapper")


def generator_for(kind: str) -> str:
    """The sound generator a mapper family feeds: ``audioldm`` (V2A-Mapper's CLAP embedding) or ``audioldm2``."""
    return "audioldm" if kind.startswith("v2a_") else "audioldm2"


def feature_names(spec) -> list[str]:
    """The visual features a mapper reads, in its argument order: CAVP and/or TimeChat, or CLIP (V2A-Mapper)."""
    return {"both": ["cavp", "timechat"], "cavp": ["cavp"], "timechat": ["timechat"], "clip": ["clip"]}[spec.encoders]


def feature_shapes(spec) -> dict[str, tuple]:
    """Per window, the shape of each feature the mapper was trained on."""
    if spec.encoders == "clip":
        return {"clip": (spec.clip_steps, spec.clip_dim)}
    return {n: s for n, s in (("cavp", (spec.cavp_steps, spec.cavp_dim)),
                              ("timechat", (spec.timechat_windows, spec.timechat_queries, spec.timechat_dim)))
            if n in feature_names(spec)}


def build_generator(generator: str, params: dict, device: str | torch.device = "cpu"):
    """AudioLDM-2 (frozen/audioldm2.py) or AudioLDM (frozen/audioldm.py) from its build params."""
    if generator == "audioldm":
        from frozen.audioldm import build_audioldm_pipeline

        return build_audioldm_pipeline(params, device=device)
    from frozen.audioldm2 import build_pipeline

    return build_pipeline(params, device=device)


@dataclass
class Clip:
    """One clip to generate: its mapper inputs per window, its prompt and seed, what to do with its sound."""

    id: str
    features: dict[str, np.ndarray]  # feature name -> (K, ...): one row per window
    prompt: str | None = None  # the text prompt (AudioLDM-2); None: no text
    seed: int = 0  # window k is seeded window_seed(seed, k)
    starts: list[float] = field(default_factory=lambda: [0.0])  # window starts (s)
    samples: int | None = None  # length of the returned audio; None: one window's settings.audio_seconds
    window_seconds: float = 10.0  # the part of a window's sound that the window owns (the mapper's clip length)
    source: str | None = None  # the video its sound goes with (muxed when written)
    ground_truth: np.ndarray | None = None  # the video's own audio (16 kHz), for the spectrogram
    info: dict = field(default_factory=dict)  # recorded with the clip's outputs


class GenerationCore:
    """A mapper (any family) and the AudioLDM(-2) pipeline its output conditions, on one device."""

    def __init__(self, mapper, audio_model, device: str | torch.device = "cpu"):
        self.mapper, self.audio_model, self.device = mapper.eval(), audio_model, device
        self.generator = generator_for(self.spec.kind)
        what = "AudioLDM" if self.generator == "audioldm" else "AudioLDM-2"
        if hasattr(audio_model, "text_encoder_2") != (self.generator == "audioldm2"):  # AudioLDM-2 has two
            raise ValueError(f"a {self.spec.kind} mapper feeds {what}, not a {type(audio_model).__name__}")
        width = clap_width(audio_model) if self.generator == "audioldm" else generated_stream_width(audio_model)
        if self.spec.target_dim != width:
            raise ValueError(f"the mapper predicts {self.spec.target_dim}-d tokens but this {what} expects {width}-d: "
                             "the mapper and the generation model do not belong together")
        audio_model.set_progress_bar_config(disable=True)  # one bar over windows instead of one per call
        self._scheduler: str | None = None

    @classmethod
    def build(cls, mapper, model_params: dict, device: str | torch.device = "cpu") -> "GenerationCore":
        """The core with the generator the mapper's family feeds, built from ``model_params``."""
        return cls(mapper, build_generator(generator_for(mapper.spec.kind), model_params, device), device)

    @property
    def spec(self):
        return self.mapper.spec

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.spec)

    @property
    def uses_text(self) -> bool:
        """AudioLDM-2 takes a text prompt; AudioLDM (V2A-Mapper) sees the CLAP embedding only."""
        return self.generator == "audioldm2"

    def check_features(self, shapes: dict[str, tuple | None], source: str) -> None:
        """Refuse features (per window) that are not what the mapper was trained on (other encoders or settings)."""
        for name, want in feature_shapes(self.spec).items():
            got = shapes.get(name)
            if got is None or tuple(got) != want:
                raise RuntimeError(f"{source}: {name} features {None if got is None else tuple(got)} do not match the "
                                   f"mapper's {want}; the mapper was trained for other encoders or settings: retrain "
                                   "(make train) or fix stages.yaml")

    def tokens(self, windows: list[dict[str, np.ndarray]], seeds: list[int] | None = None) -> torch.Tensor:
        """Per window {feature: array} -> the mapper's output (N, n_tokens, D), float32 on the CPU. ``seeds``: one
        per window (a diffusion mapper's noise, ``mapper_seed`` of each); the regression mappers ignore them."""
        def stack(name):
            if name not in self.feature_names:
                return None
            return torch.from_numpy(np.stack([w[name] for w in windows]).astype(np.float32)).to(self.device)

        slots = ("clip", None) if self.spec.encoders == "clip" else ("cavp", "timechat")
        first, second = (stack(n) for n in slots)  # (N, 40, D); (N, W, 32, D) or None
        gens = None if seeds is None else [torch.Generator().manual_seed(mapper_seed(s)) for s in seeds]
        with torch.inference_mode():
            return self.mapper.generate(first, second, generator=gens).float().cpu()

    def sound(self, windows: list[dict[str, np.ndarray]], prompts: list[str | None], seeds: list[int],
              settings: GenerationSettings) -> np.ndarray:
        """One batch of windows -> float32 (N, samples) at 16 kHz (``settings.audio_seconds`` each)."""
        if self._scheduler != settings.scheduler:
            set_scheduler(self.audio_model, settings.scheduler)
            self._scheduler = settings.scheduler
        toks = self.tokens(windows, seeds)  # (N, n_tokens, D)
        s = settings
        if self.generator == "audioldm":
            return generate_from_clap(self.audio_model, toks, seed=seeds, steps=s.steps, guidance=s.guidance,
                                      audio_seconds=s.audio_seconds, eta=s.eta)
        return generate_audio(self.audio_model, toks, prompts, seed=seeds, negative_prompt=s.negative_prompt,
                              negative_generated=s.negative_generated, steps=s.steps, guidance=s.guidance,
                              audio_seconds=s.audio_seconds, eta=s.eta)

    def generate_iter(self, clips: list[Clip], settings: GenerationSettings, *, batch_size: int = 4,
                      progress: bool = False) -> Iterator[tuple[Clip, np.ndarray]]:
        """(clip, its (samples,) float32 audio) for every clip, in order, each as soon as its last window is done."""
        from tqdm import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: need at least 1")
        if self.generator == "audioldm" and any(c.prompt for c in clips):
            log.warning("AudioLDM (V2A-Mapper) is conditioned on the CLAP embedding only: the text prompt is unused")
        items = [(ci, k) for ci, c in enumerate(clips) for k in range(len(c.starts))]
        pieces: dict[tuple[int, int], np.ndarray] = {}
        next_clip = 0
        bar = tqdm(total=len(items), unit="window", desc="generate", disable=not progress)
        for b in range(0, len(items), batch_size):
            batch = items[b: b + batch_size]
            windows = [{n: clips[ci].features[n][k] for n in self.feature_names} for ci, k in batch]
            prompts = [clips[ci].prompt if self.uses_text else None for ci, _ in batch]
            seeds = [window_seed(clips[ci].seed, k) for ci, k in batch]
            pieces.update(zip(batch, self.sound(windows, prompts, seeds, settings)))
            bar.update(len(batch))
            while next_clip < len(clips) and (next_clip, len(clips[next_clip].starts) - 1) in pieces:
                c = clips[next_clip]
                yield c, self.join(c, [pieces.pop((next_clip, k)) for k in range(len(c.starts))], settings)
                next_clip += 1
        bar.close()

    def generate(self, clips: list[Clip], settings: GenerationSettings, *, batch_size: int = 4,
                 progress: bool = False) -> list[np.ndarray]:
        """Every clip's (samples,) float32 audio (see :meth:`generate_iter`)."""
        return [a for _, a in self.generate_iter(clips, settings, batch_size=batch_size, progress=progress)]

    @staticmethod
    def join(clip: Clip, pieces: list[np.ndarray], settings: GenerationSettings) -> np.ndarray:
        """A clip's windows -> its audio: one window cut to the clip's length, or the windows crossfaded."""
        samples = clip.samples or int(round(settings.audio_seconds * SAMPLE_RATE))
        if len(pieces) == 1:
            return np.asarray(pieces[0][:samples], dtype=np.float32)
        span = int(round(clip.window_seconds * SAMPLE_RATE))
        return crossfade_join(pieces, [int(round(s * SAMPLE_RATE)) for s in clip.starts], span, samples)
