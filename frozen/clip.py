"""CLIP image encoder for V2A-Mapper: every cached frame -> CLIP's projected image embedding.

V2A-Mapper (Wang et al., AAAI 2024, arXiv 2308.09300) maps CLIP image embeddings of a video's frames to a CLAP
audio embedding. We use transformers' ``CLIPVisionModelWithProjection`` loaded with ``from_pretrained`` (a hub id
such as ``openai/clip-vit-large-patch14`` or a local ``save_pretrained`` folder) and CLIP's own preprocessing:
RGB in [0, 1], normalised with CLIP's mean/std. Our frames are already 224 x 224 (straight resize, no crop: the
frames stage), which is what ``CLIPImageProcessor`` makes of a square frame (shortest side 224, centre crop 224);
a model with another input size gets a bicubic resize. Output per clip: (T, projection_dim) image embeddings (T
the clip grid's frame count, frozen/grid.py: 40 at 4 FPS over 10 s; CLIP reads each frame on its own),
L2-normalised per frame (``normalize``, default true: CLIP compares embeddings by cosine). Padded frames (zeros,
clips shorter than 10 s) are encoded like the others, as in the CAVP stage.

    build(params, device) -> CLIPEncoder      # the FrozenEncoder used by the cache stage (pipeline/clip.py)
    build_zero_shot(model, device) -> CLIPZeroShot   # image and text towers: `--prompt auto` (infer/labels.py)

The zero-shot model is the same checkpoint loaded whole (``CLIPModel``: ``get_image_features`` is exactly the
``image_embeds`` of ``CLIPVisionModelWithProjection``), with its tokenizer; ``tiny`` is a seeded 2-layer model with a
character-level tokenizer built in code (no files), for tests and the demo.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from frozen import names
from frozen.base import EncoderInfo, freeze
from frozen.grid import ClipGrid

log = logging.getLogger(__name__)

IMAGE_SIZE = 224  # the frames' side that needs no resize for openai/clip-vit-*-patch* models
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP (CLIPImageProcessor's image_mean / image_std)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CHECKPOINT = names.CLIP_DEFAULT_CHECKPOINT  # openai/clip-vit-large-patch14


def tiny_config():
    """A small ``CLIPVisionConfig`` of the same classes (2 layers, width 32, 32-px patches, 16-d projection)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=IMAGE_SIZE, patch_size=32, projection_dim=16)


def tiny_model(seed: int = 0):
    from transformers import CLIPVisionModelWithProjection

    from frozen.weights import seeded

    return seeded(lambda: CLIPVisionModelWithProjection(tiny_config()), seed, perturb=0.02)  # non-trivial norms, biases


def load_model(checkpoint: str):
    """``CLIPVisionModelWithProjection.from_pretrained`` on a local folder or a hub id, with a clear error."""
    from transformers import CLIPVisionModelWithProjection

    try:
        return CLIPVisionModelWithProjection.from_pretrained(str(Path(checkpoint).expanduser())
                                                             if Path(checkpoint).expanduser().exists() else checkpoint)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"clip params: checkpoint {checkpoint!r} is neither a save_pretrained folder nor a "
                                f"reachable hub id of a CLIP model: {err}") from err


def preprocess(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> CLIP pixel values (N, 3, size, size), float32."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W) in [0, 1]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPEncoder:
    """FrozenEncoder: uint8 frames (B, T, S, S, 3) -> (B, T, projection_dim) float32 on CPU (the clip grid's T, S)."""

    def __init__(self, model, info: EncoderInfo, *, device: str, half: bool, normalize: bool, frame_batch: int,
                 grid: ClipGrid):
        self.model, self.info, self.device, self.grid = model, info, torch.device(device), grid
        self.dtype = torch.float16 if half else torch.float32
        self.normalize, self.frame_batch = normalize, frame_batch
        self.size = int(model.config.image_size)

    def check_inputs(self, batch: torch.Tensor, lengths: torch.Tensor) -> None:
        want = self.grid.frame_shape  # (T, S, S, 3)
        if batch.dtype != torch.uint8 or batch.ndim != 5 or tuple(batch.shape[1:]) != want:
            raise ValueError(f"clip.encode: batch must be uint8 (B, {', '.join(map(str, want))}), "
                             f"got {batch.dtype} {tuple(batch.shape)}")
        if lengths.shape != (batch.shape[0],):
            raise ValueError(f"clip.encode: lengths must have shape ({batch.shape[0]},), got {tuple(lengths.shape)}")

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.check_inputs(batch, lengths)
        b, t = batch.shape[:2]
        flat = batch.reshape(b * t, *batch.shape[2:])  # (B*T, S, S, 3)
        outs = []
        with torch.inference_mode():
            for s in range(0, flat.shape[0], self.frame_batch):
                px = preprocess(flat[s: s + self.frame_batch], self.size).to(self.device, self.dtype)
                emb = self.model(pixel_values=px).image_embeds.float()  # (n, projection_dim)
                outs.append((F.normalize(emb, dim=-1) if self.normalize else emb).cpu())
        return torch.cat(outs).reshape(b, t, -1)  # (B, T, projection_dim)


def build(params: dict, device: str = "cpu", grid: ClipGrid | None = None) -> CLIPEncoder:
    """params: ``model`` full|tiny; ``checkpoint`` (hub id or folder) for full; ``seed`` for tiny; ``half`` (CUDA
    only); ``normalize`` (default true); ``frame_batch`` (frames per forward pass, default 80). ``grid``: the
    frames' clip grid (default 4 FPS, 10 s, 224 px)."""
    grid = grid or ClipGrid()
    kind = params.get("model", "full")
    half = bool(params.get("half", False))
    if half and not str(device).startswith("cuda"):
        raise ValueError(f"clip params: half=True needs a CUDA device, got device {device!r}; set half: false")
    if kind == "tiny":
        seed = int(params.get("seed", 0))
        model, identity = tiny_model(seed), {"tiny_seed": seed}
    elif kind == "full":
        ckpt = params.get("checkpoint") or DEFAULT_CHECKPOINT
        model, identity = load_model(str(ckpt)), {"source": str(ckpt)}
    else:
        raise ValueError(f"clip params: model must be 'full' or 'tiny', got {kind!r}")
    model = freeze(model).to(device)
    if half:
        model = model.half()
    cfg = model.config
    info = EncoderInfo(name="clip", input_kind="frames", output_shape=(grid.n_frames, int(cfg.projection_dim)),
                       config={"class": type(model).__name__, "hidden_size": cfg.hidden_size,
                               "num_hidden_layers": cfg.num_hidden_layers, "patch_size": cfg.patch_size,
                               "image_size": cfg.image_size, "projection_dim": cfg.projection_dim,
                               "normalize": bool(params.get("normalize", True))},
                       checkpoint=identity)
    log.info("clip: built %s model (D=%d) on %s", kind, cfg.projection_dim, device)
    return CLIPEncoder(model, info, device=device, half=half, normalize=bool(params.get("normalize", True)),
                       frame_batch=int(params.get("frame_batch", 80)), grid=grid)


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot labels: the image and the text towers (``--prompt auto``, infer/labels.py)
# ----------------------------------------------------------------------------------------------------------------
_TINY_CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789-,.()'&/"))


def tiny_tokenizer():
    """A character-level ``CLIPTokenizer`` built in code: each character a token (``</w>`` on a word's last one)."""
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(specials + _TINY_CHARS + [c + "</w>" for c in _TINY_CHARS])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_config():
    """A small ``CLIPConfig``: the tiny vision tower of :func:`tiny_config` and a 2-layer text tower (16-d shared
    space)."""
    from transformers import CLIPConfig

    vision = tiny_config().to_dict()
    text = dict(vocab_size=len(tiny_tokenizer()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=vision["projection_dim"])


class CLIPZeroShot:
    """A whole CLIP (image and text towers, their projections, ``logit_scale``) and its tokenizer, frozen, on one
    device. ``image_embeddings``: uint8 frames (N, H, W, 3) -> (N, D); ``text_embeddings``: N strings -> (N, D);
    both float32 on the CPU, L2-normalised (cosine = dot product)."""

    def __init__(self, model, tokenizer, *, device: str | torch.device = "cpu", frame_batch: int = 32):
        self.model, self.tokenizer = freeze(model).to(device), tokenizer
        self.device, self.frame_batch = torch.device(device), frame_batch
        self.size = int(model.config.vision_config.image_size)

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature, exp(logit_scale) (100 for the released models)."""
        return float(self.model.logit_scale.detach().float().exp().cpu())

    @torch.inference_mode()
    def image_embeddings(self, frames: torch.Tensor) -> torch.Tensor:
        outs = []
        for s in range(0, frames.shape[0], self.frame_batch):
            px = preprocess(frames[s: s + self.frame_batch], self.size).to(self.device)  # (n, 3, S, S)
            out = self.model.get_image_features(pixel_values=px)
            outs.append(F.normalize(getattr(out, "pooler_output", out).float(), dim=-1).cpu())
        return torch.cat(outs)  # (N, D)

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str], batch: int = 64) -> torch.Tensor:
        outs = []
        for s in range(0, len(texts), batch):
            enc = self.tokenizer(list(texts[s: s + batch]), padding=True, truncation=True, return_tensors="pt")
            out = self.model.get_text_features(input_ids=enc.input_ids.to(self.device),
                                               attention_mask=enc.attention_mask.to(self.device))
            outs.append(F.normalize(getattr(out, "pooler_output", out).float(), dim=-1).cpu())
        return torch.cat(outs)  # (N, D)


def tiny_zero_shot_model(seed: int = 0):
    from transformers import CLIPModel

    from frozen.weights import seeded

    return seeded(lambda: CLIPModel(tiny_clip_config()), seed, perturb=0.02)


def build_zero_shot(model: str, device: str | torch.device = "cpu", *, seed: int = 0) -> CLIPZeroShot:
    """``model``: ``tiny`` (seeded, ``seed``), or a ``CLIPModel`` checkpoint: a local ``save_pretrained`` folder or a
    hub id (``openai/clip-vit-large-patch14``, V2A-Mapper's CLIP) with its tokenizer."""
    if model == "tiny":
        return CLIPZeroShot(tiny_zero_shot_model(seed), tiny_tokenizer(), device=device)
    from transformers import AutoTokenizer, CLIPModel

    ref = str(Path(model).expanduser()) if Path(model).expanduser().exists() else model
    try:
        net, tok = CLIPModel.from_pretrained(ref), AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"label_model {model!r} is neither a save_pretrained folder nor a reachable hub id "
                                f"of a CLIP model (image and text towers, tokenizer): "
                                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    log.info("clip: zero-shot labels with %s on %s", model, device)
    return CLIPZeroShot(net, tok, device=device)
