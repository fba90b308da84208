"""DeSync with Synchformer, following av-benchmark: preprocessing, checkpoint loading and the scorer.

Protocol (av-benchmark ``extract_video.py``, ``av_bench/extract.py``, ``av_bench/evaluate.py``):

* Video: decoded with an ffmpeg ``fps=25`` filter to RGB, first 8 s = 200 frames (fewer: an error, the clip is
  not scored), shorter side resized to 224 on the uint8 frames (torchvision's native uint8 bicubic kernel,
  antialiased), centre-cropped to 224 x 224, scaled to [0, 1], normalised with mean = std = 0.5. Cut into 16-frame
  segments with step 8 -> 24.
* Audio (``SynchformerAudioDataset``): the file's channels averaged, ``transforms.Resample`` to 16 kHz, first 8 s
  = 128,000 samples (fewer: not scored), cut into 10,240-sample segments with step 5,120 -> 24; each
  segment -> power mel spectrogram (n_fft 1024, hann window 400, hop 160, centred reflect padding, 128 HTK mel
  bands 0-8 kHz, no filter normalisation) -> log(x + 1e-6) -> zero-padded from 65 to 66 frames ->
  (x + 4.2677393) / (2 * 4.5689974).
* Offsets: the first 14 and the last 14 segments (4.8 s windows at both ends of the clip) each give 21 logits
  over offsets linspace(-2, 2, 21) s; the clip's DeSync is the mean of the two |argmax offsets| (av-benchmark
  averages all windows of all clips, the same number per clip, so the mean of clip values is the same).

Checkpoint: ``24-01-04T16-39-21.pt`` (``{"model": state_dict, ...}``; if it holds non-tensor objects,
``torch.load(weights_only=True)`` refuses it: save ``ckpt["model"]`` to a file first) or av-benchmark's
``synchformer_state_dict.pth`` (flat). Missing or wrong-shaped keys raise; unexpected keys are logged and dropped;
a longer ``transformer.pos_emb_cfg.pos_emb`` is trimmed as the reference does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from frozen.audio import ast_mel, htk_mel_filters
from frozen.synchformer import Synchformer, SynchformerConfig, load_synchformer
from frozen.weights import seeded
from scoring.audio import ClipAudio
from scoring.video_input import resize_short_side_uint8
from scoring.params import EvalParams

log = logging.getLogger(__name__)

SR = 16000
FPS = 25
CLIP_SECONDS = 8.0
V_SEG, V_STEP = 16, 8
A_SEG, A_STEP = 10240, 5120
N_FFT, WIN, HOP, N_MELS = 1024, 400, 160, 128
AST_MEAN, AST_STD = -4.2677393, 4.5689974
OFFSETS = np.linspace(-2.0, 2.0, 21)


# ------------------------------------------------------------------------------------------------ video side


def read_video_frames(path: str | Path, fps: int = FPS, max_frames: int | None = None) -> np.ndarray:
    """Decode ``path`` through an ffmpeg ``fps`` filter to RGB: (T, H, W, 3) uint8 (at most ``max_frames``)."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=stream), graph.add("fps", str(fps)), graph.add("format", "rgb24"),
                 graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()

        def drain() -> bool:
            while max_frames is None or len(frames) < max_frames:
                try:
                    frames.append(graph.vpull().to_ndarray(format="rgb24"))
                except (av.error.BlockingIOError, av.error.EOFError):
                    return False
            return True

        done = False
        for frame in container.decode(stream):
            graph.vpush(frame)
            if drain():
                done = True
                break
        if not done:
            graph.vpush(None)  # flush: the fps filter emits its pending frames
            drain()
    if not frames:
        raise ValueError(f"no video frames decoded from {path}")
    return np.stack(frames)


def resize_center_crop(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, size, size) uint8: torchvision's ``v2.Resize(size, BICUBIC)`` on the uint8
    frames (scoring/video_input.py) then ``v2.CenterCrop(size)`` (offsets rounded)."""
    x = resize_short_side_uint8(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2), size)
    nh, nw = x.shape[-2:]
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def video_segments(frames: np.ndarray, size: int = 224, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """(T, H, W, 3) uint8 at 25 fps -> (S, 16, 3, size, size) float32 in [-1, 1]; S = 24 for 8 s."""
    n = int(FPS * seconds)
    if len(frames) < n:
        raise ValueError(f"video has {len(frames)} frames at {FPS} fps, DeSync needs {n} ({seconds:g} s)")
    x = resize_center_crop(frames[:n], size).float().div_(255.0).sub_(0.5).div_(0.5)
    starts = range(0, n - V_SEG + 1, V_STEP)
    return torch.stack([x[s:s + V_SEG] for s in starts])


# ------------------------------------------------------------------------------------------------ audio side


_MEL_FB: torch.Tensor | None = None


def log_mel_segments(wav16k: np.ndarray, spec_t: int = 66, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """16 kHz mono waveform -> (S, 128, spec_t) normalised log-mel segments; S = 24 for 8 s."""
    global _MEL_FB
    n = int(SR * seconds)
    wav = torch.as_tensor(np.asarray(wav16k, dtype=np.float32))
    if wav.ndim != 1 or wav.shape[0] < n:
        raise ValueError(f"DeSync needs a mono waveform of at least {n} samples, got shape {tuple(wav.shape)}")
    wav = wav[:n]
    segs = torch.stack([wav[s:s + A_SEG] for s in range(0, n - A_SEG + 1, A_STEP)])  # (S, 10240)
    if _MEL_FB is None:
        _MEL_FB = htk_mel_filters(SR, N_FFT, N_MELS)
    x = ast_mel(segs, _MEL_FB, N_FFT, WIN, HOP)  # (S, 128, 65)
    if x.shape[-1] < spec_t:
        x = F.pad(x, (0, spec_t - x.shape[-1]), value=0.0)
    x = x[..., :spec_t]
    return (x - AST_MEAN) / (2 * AST_STD)


# --------------------------------------------------------------------------------------------------- scorer


class DeSyncScorer:
    """``VideoAudioScorer``: (video path, the clip's audio: :class:`ClipAudio` or a 16 kHz mono array of >= 8 s) ->
    mean |predicted offset| in seconds over the first and last 4.8 s windows (values on the 0.2 s grid, 0 .. 2).
    Video features are cached per file."""

    name = "desync"

    def __init__(self, net: Synchformer, device: str = "cpu", seg_batch: int = 8, cache_size: int = 64):
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = device
        self.seg_batch = seg_batch
        self.cache_size = cache_size
        self._vcache: dict[tuple, torch.Tensor] = {}

    @torch.inference_mode()
    def video_features(self, video_path: str | Path) -> torch.Tensor:
        p = Path(video_path)
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key not in self._vcache:
            frames = read_video_frames(p, FPS, max_frames=int(FPS * CLIP_SECONDS))
            segs = video_segments(frames, self.net.cfg.img_size)  # (S, 16, 3, H, W)
            feats = [self.net.extract_vfeats(segs[i:i + self.seg_batch][None].to(self.device))[0]
                     for i in range(0, len(segs), self.seg_batch)]
            if len(self._vcache) >= self.cache_size:
                self._vcache.pop(next(iter(self._vcache)))
            self._vcache[key] = torch.cat(feats)  # (S, 8, D)
        return self._vcache[key]

    @torch.inference_mode()
    def audio_features(self, audio) -> torch.Tensor:
        wav16k = ClipAudio.from_source(audio).sync_input(CLIP_SECONDS)  # mono mean, Resample, first 8 s
        mels = log_mel_segments(wav16k, self.net.cfg.spec_t).to(self.device)  # (S, 128, 66)
        return torch.cat([self.net.extract_afeats(mels[i:i + self.seg_batch][None])[0]
                          for i in range(0, len(mels), self.seg_batch)])  # (S, 6, D)

    @torch.inference_mode()
    def offsets(self, video_path: str | Path, audio) -> np.ndarray:
        """Predicted offsets (s) of the first and last 4.8 s windows."""
        v, a = self.video_features(video_path), self.audio_features(audio)
        k = self.net.cfg.n_segments
        s = min(len(v), len(a))
        if s < k:
            raise ValueError(f"DeSync needs {k} segments per window, got {s}")
        v, a = v[:s], a[:s]
        logits = torch.cat([self.net.compare_v_a(v[None, :k], a[None, :k]),
                            self.net.compare_v_a(v[None, -k:], a[None, -k:])])
        return OFFSETS[logits.argmax(-1).cpu().numpy()]

    def __call__(self, video_path: Path, audio) -> float:
        return float(np.mean(np.abs(self.offsets(video_path, audio))))


def build_desync_scorer(p: EvalParams, device: str | None = None) -> DeSyncScorer | None:
    """``p.synchformer_ckpt``: a checkpoint path, ``"tiny"`` (seeded random tiny network, ``p.seed``) or empty (None:
    DeSync is skipped)."""
    ckpt = p.synchformer_ckpt
    device = device or p.device
    if not ckpt:
        return None
    if ckpt in ("tiny", "random-full"):  # random-full: the released size, random weights (smoke_full.py)
        cfg = SynchformerConfig.tiny() if ckpt == "tiny" else SynchformerConfig()
        net = seeded(lambda: Synchformer(cfg), int(p.seed) + 7)
        return DeSyncScorer(net, device)
    if not Path(ckpt).expanduser().is_file():  # before building the 237M-parameter network
        raise FileNotFoundError(f"Synchformer checkpoint {ckpt} does not exist (evaluate.params.synchformer_ckpt)")
    net = Synchformer()
    load_synchformer(net, ckpt)
    return DeSyncScorer(net, device)
