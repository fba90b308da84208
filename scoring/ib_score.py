"""IB-score (av-benchmark protocol): ImageBind's audio and video inputs prepared as av-benchmark does, and the scorer.
The network itself is frozen/imagebind.py.

Audio (``ImageBindAudioDataset``): the whole generated file, every channel, ``functional.resample`` to 16 kHz;
three 2 s clips with starts spread evenly over [0, duration - 2] (0/4/8 s for a 10 s file, 0/4.12/8.24 s for
10.24 s: av-benchmark does not crop to the paper's 8 s here); each clip minus its mean over all channels (in place),
Kaldi fbank of channel 0, padded to 204 frames, normalised. Video (``VideoDataset``): frames at 0.5 fps, the first
``int(0.5 * 8)`` = 4, shorter side to 224 on uint8 (torchvision's bicubic kernel), /255, CLIP normalisation, three
spatial crops; consecutive frame pairs are the 2-frame clips.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from frozen.audio import FbankConfig, fbank
from frozen.imagebind import (AUDIO_CLIP_SECONDS, AUDIO_CLIPS, AUDIO_FBANK, AUDIO_MEAN, AUDIO_SR, AUDIO_STD, CLIP_MEAN,
                              CLIP_STD, NUM_CROPS, VIDEO_FPS, ImageBind, ImageBindConfig, build_imagebind)
from scoring.audio import ClipAudio
from scoring.metrics import cosine_score
from scoring.video_input import resize_short_side_uint8
from scoring.params import EvalParams


# ----------------------------------------------------------------------------------------- audio input


def clip_timepoints(duration: float, clip_seconds: float = AUDIO_CLIP_SECONDS,
                    clips: int = AUDIO_CLIPS) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo ``ConstantClipsPerVideoSampler`` read out: starts evenly spaced over [0, duration - clip]."""
    clip = Fraction(clip_seconds)
    max_start = Fraction(max(duration - clip, 0))
    step = Fraction(max_start, max(clips - 1, 1))
    out = []
    for i in range(clips):
        out.append((step * i, step * i + clip))
        if step * (i + 1) > max_start:
            break
    return out


def audio_clips(wav16k: np.ndarray, cfg: ImageBindConfig | None = None) -> torch.Tensor:
    """16 kHz waveform, (N,) mono or (C, N) channels -> (3, 1, mel_bins, target_length) normalised fbank clips."""
    cfg = cfg or ImageBindConfig()
    x = np.asarray(wav16k, dtype=np.float32)
    wave = torch.tensor(x.reshape(1, -1) if x.ndim == 1 else x)  # (C, N), a copy: clips are centred in place
    n = wave.shape[1]
    if n < AUDIO_FBANK.window_size:
        raise ValueError(f"ImageBind audio needs at least {AUDIO_FBANK.window_size} samples, got {n}")
    fcfg = FbankConfig(sample_rate=AUDIO_SR, num_mel_bins=cfg.mel_bins, window="hanning")
    out = []
    for start, end in clip_timepoints(n / AUDIO_SR):
        seg = wave[:, int(start * AUDIO_SR):int(end * AUDIO_SR)]  # (C, n_clip), a view
        if seg.shape[1] < fcfg.window_size:
            raise ValueError(f"ImageBind audio clip [{float(start)}, {float(end)}) s has only {seg.shape[1]} samples")
        seg -= seg.mean()  # over every channel, in place on the shared waveform, like the reference
        spec = fbank(seg[:1], fcfg)[0].T  # (mel, frames): Kaldi's fbank reads channel 0
        p = cfg.target_length - spec.shape[1]
        spec = F.pad(spec, (0, p)) if p > 0 else spec[:, :cfg.target_length]
        out.append(((spec - AUDIO_MEAN) / AUDIO_STD)[None])
    return torch.stack(out)


# ----------------------------------------------------------------------------------------- video input


def decode_frames(path: str | Path, fps: float = VIDEO_FPS, max_frames: int | None = None) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 through ffmpeg's ``fps`` filter, as torio's StreamingMediaDecoder gives them."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            graph = av.filter.Graph()
            src = graph.add_buffer(template=stream)
            f_fps = graph.add("fps", f"fps={fps}")
            f_fmt = graph.add("format", "pix_fmts=rgb24")
            sink = graph.add("buffersink")
            src.link_to(f_fps)
            f_fps.link_to(f_fmt)
            f_fmt.link_to(sink)
            graph.configure()

            def drain() -> None:
                while True:
                    try:
                        frames.append(sink.pull().to_ndarray())
                    except (av.error.BlockingIOError, av.error.EOFError):
                        return

            for frame in container.decode(stream):
                src.push(frame)
                drain()
                if max_frames is not None and len(frames) >= max_frames:
                    break
            else:
                src.push(None)
                drain()
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode video {path}: {e}") from e
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames[:max_frames] if max_frames is not None else frames)


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """(T, C, H, W) uint8 -> float in [0, 255], shorter side ``size``: torchvision's ``v2.Resize(size, BICUBIC)``
    on the uint8 frames (its native uint8 kernel on the CPU, scoring/video_input.py)."""
    return resize_short_side_uint8(x, size).float()


def spatial_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Three ``size`` x ``size`` crops along the longer side (start, centre, end) of (..., H, W)."""
    h, w = x.shape[-2:]
    out = []
    for idx in range(NUM_CROPS):
        y0, x0 = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
        if h > w:
            y0 = {0: 0, 1: y0, 2: h - size}[idx]
        else:
            x0 = {0: 0, 1: x0, 2: w - size}[idx]
        out.append(x[..., y0:y0 + size, x0:x0 + size])
    return out


def video_clips(frames: np.ndarray, cfg: ImageBindConfig | None = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3 crops x (T - 1) clips, 3, 2, S, S) normalised 2-frame clips."""
    cfg = cfg or ImageBindConfig()
    if frames.ndim != 4 or frames.shape[0] < 2 or frames.shape[-1] != 3:
        raise ValueError(f"need at least 2 RGB frames (T, H, W, 3), got shape {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
    x = resize_short_side(x, cfg.image_size) / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    crops = torch.stack(spatial_crops(x, cfg.image_size))  # (3, T, C, S, S)
    clips = torch.cat([crops[:, i:i + 2] for i in range(crops.shape[1] - 1)])  # clip-major, then crop
    return clips.permute(0, 2, 1, 3, 4).contiguous()  # (n, C, 2, S, S)


# ----------------------------------------------------------------------------------------- scorer


class ImageBindScorer:
    """IB-score of one clip: ``(video_path, audio) -> 100 x cosine(video embedding, audio embedding)``.

    ``seconds`` is the protocol's duration (8 s): the first ``int(0.5 * seconds)`` frames at 0.5 fps are used (at
    least 2); a video with fewer is rejected with ValueError, as av-benchmark drops it. Video embeddings are cached
    per file (path, size, mtime).
    """

    def __init__(self, model: ImageBind, device: str = "cpu", seconds: float = 8.0, batch_size: int = 9):
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = device
        self.n_frames = max(2, int(VIDEO_FPS * seconds))
        self.batch_size = batch_size
        self._video_cache: dict[tuple, np.ndarray] = {}

    @torch.inference_mode()
    def _embed_mean(self, modality: str, clips: torch.Tensor) -> np.ndarray:
        embs = [self.model.embed(modality, clips[i:i + self.batch_size].to(self.device))
                for i in range(0, clips.shape[0], self.batch_size)]
        return torch.cat(embs).mean(dim=0).double().cpu().numpy()

    def video_embedding(self, video_path: str | Path) -> np.ndarray:
        st = os.stat(video_path)
        key = (str(Path(video_path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._video_cache:
            frames = decode_frames(video_path, VIDEO_FPS, max_frames=self.n_frames)
            if frames.shape[0] < self.n_frames:
                raise ValueError(f"video {video_path} gives {frames.shape[0]} frames at {VIDEO_FPS} fps, "
                                 f"ImageBind needs {self.n_frames}")
            self._video_cache[key] = self._embed_mean("vision", video_clips(frames, self.model.cfg))
        return self._video_cache[key]

    def audio_embedding(self, audio) -> np.ndarray:
        """``audio``: a :class:`ClipAudio` (the whole file, resampled here) or a 16 kHz waveform (N,) / (C, N)."""
        wav = audio.ib_input() if isinstance(audio, ClipAudio) else audio
        return self._embed_mean("audio", audio_clips(wav, self.model.cfg))

    def __call__(self, video_path: Path, audio) -> float:
        v = self.video_embedding(video_path)
        a = self.audio_embedding(ClipAudio.from_source(audio) if isinstance(audio, (str, Path, tuple)) else audio)
        return float(cosine_score(v[None], a[None])[0])


def build_ib_scorer(p: EvalParams) -> ImageBindScorer:
    """From the evaluate params: ``imagebind_ckpt`` ("tiny" or a path), ``seed``, ``seconds``, ``device``."""
    model = build_imagebind(p.imagebind_ckpt, seed=int(p.seed) + 3)
    return ImageBindScorer(model, device=p.device, seconds=float(p.seconds))
