"""TimeChat (CVPR 2024) visual path up to the sliding-window video Q-Former: EVA ViT-g -> ln_vision ->
time-aware frame Q-Former -> frame position embedding -> video Q-Former per window (-> optional llama_proj).

Facts: docs/models.md section 3 ("TimeChat visual path") and TimeChat's ``encode_videoQformer_visual``. Module
names reproduce the released keys (``visual_encoder.*``, ``ln_vision.*``, ``Qformer.bert.*``, ``query_tokens``,
``video_frame_position_embedding.*``, ``video_query_tokens``, ``video_Qformer.bert.*``, ``llama_proj.*``).

The frame count, the instruction times and the window layout come from the clip grid (frozen/grid.py): T frames
at the frames stage's fps. Windows: like the reference, window k covers frames [k*stride, k*stride + window); a
window starts at every multiple of ``stride`` below T, so the last ones may be shorter (partial windows are kept,
never padded or dropped): W = ceil(T / stride).  Default window 4, stride 4 at 4 FPS: 10 windows of 1 s for 40
frames. T is at most the 96 rows of ``video_frame_position_embedding``.
Padded (black) frames after ``lengths`` are encoded like real ones, as in the paper's zero padding.

    build(params, device, grid) -> TimeChatEncoder  # FrozenEncoder: (B, T, 224, 224, 3) uint8 -> (B, W, 32, D)
    TimeChatVisual(cfg)                            # the nn.Module; forward(frames (B,T,3,S,S) normalised, ids, mask)
    timestamp_texts(grid), window_starts(T, window, stride), make_tiny_tokenizer(), load_timechat_weights(...)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from frozen import names
from frozen.base import EncoderInfo, build_options, empty_on_cpu, freeze, positive_int
from frozen.grid import ClipGrid, windows
from frozen.weights import (check_state, existing_file, half_problem, init_tiny_, load_checked, meta_state,
                            read_weights, resolve_weights, shape_problems, shapes_of, unwrap)
from frozen.eva_vit import EvaViT, EvaViTConfig, half_matmul_weights_
from frozen.qformer import QFormer, QFormerConfig

log = logging.getLogger(__name__)

IMAGE_SIZE = names.TIMECHAT_IMAGE_SIZE  # 224: EVA ViT-g's 257 position embeddings
FRAME_BATCH = names.TIMECHAT_FRAME_BATCH  # frames per ViT call (default)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TIMESTAMP_TEMPLATE = "This frame is sampled at {t} second."
MAX_TEXT_LEN = 32
TINY_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "this", "frame", "is", "sampled", "at", "second", "."]
TINY_VOCAB = TINY_WORDS + [str(d) for d in range(10)] + [f"##{d}" for d in range(10)]  # + [DEC] = 33 tokens


@dataclass
class TimeChatConfig:
    """Sizes of the whole visual path plus the run settings that shape its output."""

    vit: EvaViTConfig = field(default_factory=EvaViTConfig.full)
    ln_vision_eps: float = 1e-5
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    video_qformer: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(layers=2, encoder_width=768, cross_attention_freq=1, vocab_size=0, text_ffn=False)
    )
    num_query: int = 32
    num_video_query: int = 32
    max_frame_pos: int = names.TIMECHAT_FRAME_POSITIONS  # 96: the most frames a clip can have
    llama_dim: int = 4096  # 0: no llama_proj (the cache keeps the 768-d video Q-Former output)
    window: int = 4
    stride: int = 4
    fps: float = 4.0  # of the frames: the clip grid's (recorded with the features)

    def __post_init__(self) -> None:
        if isinstance(self.vit, dict):
            self.vit = EvaViTConfig(**self.vit)
        if isinstance(self.qformer, dict):
            self.qformer = QFormerConfig(**self.qformer)
        if isinstance(self.video_qformer, dict):
            self.video_qformer = QFormerConfig(**self.video_qformer)
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"timechat: window and stride must be >= 1, got window={self.window}, stride={self.stride}")
        if self.fps <= 0:
            raise ValueError(f"timechat: fps must be > 0, got {self.fps}")
        if self.qformer.encoder_width != self.vit.width or self.video_qformer.encoder_width != self.qformer.hidden:
            raise ValueError("timechat: Q-Former cross-attention widths must equal the ViT width / frame Q-Former width")

    @property
    def out_dim(self) -> int:
        return self.llama_dim if self.llama_dim > 0 else self.video_qformer.hidden

    def n_windows(self, n_frames: int) -> int:
        return len(window_starts(n_frames, self.window, self.stride))

    @classmethod
    def full(cls, **run) -> "TimeChatConfig":
        return cls(**run)

    @classmethod
    def tiny(cls, **run) -> "TimeChatConfig":
        """Same classes: ViT width 32 x 2 blocks (patch 14 at 224), Q-Formers hidden 32, 2 layers, vocab 33."""
        q = QFormerConfig(hidden=32, layers=2, heads=4, intermediate=64, encoder_width=32, vocab_size=len(TINY_VOCAB) + 1, max_positions=64)
        vq = QFormerConfig(hidden=32, layers=2, heads=4, intermediate=64, encoder_width=32, cross_attention_freq=1,
                           vocab_size=0, max_positions=64, text_ffn=False)  # fmt: skip
        run.setdefault("llama_dim", 48)
        return cls(vit=EvaViTConfig.tiny(), qformer=q, video_qformer=vq, max_frame_pos=96, **run)


def timestamp_texts(grid: ClipGrid) -> list[str]:
    """One instruction per frame of the grid, exactly as TimeChat writes it: ``str(round(i / fps, 1))`` (so 0.25
    -> '0.2')."""
    return [TIMESTAMP_TEMPLATE.format(t=t) for t in grid.timestamps()]


window_starts = windows  # [(start, end)] like the reference's range(0, T, stride) with frames[i:i + window]


def make_tiny_tokenizer():
    """An offline BERT WordPiece tokenizer whose vocabulary covers the timestamp template, + ``[DEC]``."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(TINY_VOCAB)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


def load_bert_tokenizer(name_or_path: str):
    """bert-base-uncased (a local folder or a hub id) + ``[DEC]`` as BOS, as BLIP-2's ``init_tokenizer`` does."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(name_or_path)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


class TimeChatVisual(nn.Module):
    def __init__(self, cfg: TimeChatConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = EvaViT(cfg.vit)
        self.ln_vision = nn.LayerNorm(cfg.vit.width, eps=cfg.ln_vision_eps)
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query, cfg.qformer.hidden))
        self.Qformer = QFormer(cfg.qformer)
        self.video_frame_position_embedding = nn.Embedding(cfg.max_frame_pos, cfg.qformer.hidden)
        self.video_query_tokens = nn.Parameter(torch.zeros(1, cfg.num_video_query, cfg.video_qformer.hidden))
        self.video_Qformer = QFormer(cfg.video_qformer)
        self.llama_proj = nn.Linear(cfg.video_qformer.hidden, cfg.llama_dim) if cfg.llama_dim > 0 else None
        self.vit_fp16 = False  # set by use_fp16_vit(): the ViT under float16 autocast, as TimeChat ran it

    def use_fp16_vit(self) -> "TimeChatVisual":
        """The reference's ViT precision: fp16 Linear/Conv weights under autocast; the rest stays fp32."""
        half_matmul_weights_(self.visual_encoder)
        self.vit_fp16 = True
        return self

    def encode_frames(self, images: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) normalised, input_ids/text_mask (N, L) -> frame tokens (N, Q + L, H)."""
        with torch.autocast(images.device.type, dtype=torch.float16, enabled=self.vit_fp16):
            img = self.visual_encoder(images)  # (N, 257, 1408)
        img = self.ln_vision(img.float())  # (N, 257, 1408), fp32 like the reference's LayerNorm subclass
        queries = self.query_tokens.expand(img.shape[0], -1, -1)  # (N, Q, H)
        return self.Qformer(queries, img, input_ids, text_mask)  # (N, Q + L, H), text rows kept

    def encode_video(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """frame tokens (B, T, Q + L, H) -> (B, W, Qv, D) over sliding windows."""
        b, t = frame_tokens.shape[:2]
        if t > self.cfg.max_frame_pos:
            raise ValueError(f"timechat: {t} frames exceed the {self.cfg.max_frame_pos} frame positions")
        pos = self.video_frame_position_embedding.weight[:t]  # (T, H)
        x = frame_tokens + pos[None, :, None, :]  # (B, T, Q + L, H), one embedding per frame, every token
        outs = []
        for s, e in window_starts(t, self.cfg.window, self.cfg.stride):
            memory = x[:, s:e].flatten(1, 2)  # (B, w * (Q + L), H), all ones mask as in the reference
            queries = self.video_query_tokens.expand(b, -1, -1)  # (B, Qv, H)
            out = self.video_Qformer(queries, memory)  # (B, Qv, H)
            outs.append(self.llama_proj(out) if self.llama_proj is not None else out)  # (B, Qv, D)
        return torch.stack(outs, dim=1)  # (B, W, Qv, D)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """images (B, T, 3, S, S) normalised, input_ids/text_mask (T, L) shared by every clip -> (B, W, Qv, D)."""
        b, t = images.shape[:2]
        ids = input_ids.repeat(b, 1)  # (B*T, L), frame-major inside each clip
        mask = text_mask.repeat(b, 1)  # (B*T, L)
        tokens = self.encode_frames(images.flatten(0, 1), ids, mask)  # (B*T, Q + L, H)
        return self.encode_video(tokens.unflatten(0, (b, t)))  # (B, W, Qv, D)


def _tiny_rule(name: str, module: nn.Module, t: torch.Tensor, draw) -> torch.Tensor:
    r = draw("randn")
    if name.endswith(("norm1.weight", "norm2.weight", "LayerNorm.weight", "ln_vision.weight")):
        return 1.0 + 0.1 * r
    if t.ndim == 1:
        return 0.05 * r
    return r / max(1, t.shape[-1] if t.ndim == 2 else t[0].numel()) ** 0.5


def init_tiny_weights_(model: TimeChatVisual, seed: int) -> TimeChatVisual:
    """Seeded random weights independent of the global RNG (LayerNorms randomised too)."""
    return init_tiny_(model, seed, _tiny_rule)


# ----------------------------------------------------------------------------------------------- loading

POSITION_IDS = ("Qformer.bert.embeddings.position_ids", "video_Qformer.bert.embeddings.position_ids")  # constants


def _fit_frame_positions(state: dict[str, torch.Tensor], rows: int) -> None:
    """TimeChat's nearest interpolation of ``video_frame_position_embedding`` to the model's frame positions."""
    name = "video_frame_position_embedding.weight"
    value = state.get(name)
    if value is not None and value.shape[0] != rows:
        log.warning("timechat: %s rows %d -> %d by nearest interpolation (as TimeChat does)", name, value.shape[0],
                    rows)
        state[name] = nn.functional.interpolate(value.float().T[None], size=rows, mode="nearest")[0].T


def load_timechat_weights(model: TimeChatVisual, files: list[tuple[str, str | Path, str]]) -> None:
    """Load ``[(what, path, key_prefix)]`` in order (later files override earlier ones), e.g.
    eva_vit_g.pth (flat, prefix ``visual_encoder.``) -> instruct_blip (["model"]) -> timechat_7b (["model"]).
    Each file is checked on its own (shapes; unexpected keys are logged per file); missing keys raise after all
    files (``position_ids`` are constants)."""
    merged: dict[str, torch.Tensor] = {}
    for what, path, prefix in files:
        source = f"timechat {what} checkpoint {str(path)!r}"
        state = {prefix + k: v for k, v in unwrap(read_weights(path, f"timechat: {what}"), source=source).items()}
        _fit_frame_positions(state, model.cfg.max_frame_pos)
        part, _ = check_state(model, state, source=source, allow_missing=("",))  # a file holds a part of the model
        merged.update(part)
    load_checked(model, merged, source=f"timechat checkpoints {[str(p) for _, p, _ in files]}",
                 allow_missing=POSITION_IDS)


def resolve_file(params: dict, key: str, default_filename: str | None) -> tuple[Path, dict]:
    """A local file, or a hub reference ``owner/repo`` (with ``default_filename``) / ``owner/repo/path/in/repo``,
    fetched with ``hf_hub_download`` only when it is not a local path."""
    return resolve_weights(str(params[key]), what=f"timechat params: {key}", filename=default_filename,
                           revision=params.get(f"{key}_revision"))


# ------------------------------------------------------------------------------------------ frozen encoder


class TimeChatEncoder:
    """FrozenEncoder for the cache stage: uint8 frames (B, T, 224, 224, 3) -> (B, W, 32, D) float32 on CPU, T the
    clip grid's frame count and W its window count."""

    def __init__(self, model: TimeChatVisual, tokenizer, info: EncoderInfo, *, device: str, frame_batch: int,
                 grid: ClipGrid) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.grid = grid
        self.device = torch.device(device)
        self.frame_batch = frame_batch
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)

    def check_inputs(self, batch: torch.Tensor, lengths: torch.Tensor) -> None:
        want = self.grid.frame_shape  # (T, 224, 224, 3)
        if batch.dtype != torch.uint8 or batch.ndim != 5 or tuple(batch.shape[1:]) != want:
            raise ValueError(f"timechat.encode: batch must be uint8 (B, {', '.join(map(str, want))}), got {batch.dtype} {tuple(batch.shape)}")
        if lengths.shape != (batch.shape[0],):
            raise ValueError(f"timechat.encode: lengths must have shape ({batch.shape[0]},), got {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > want[0]).any()):
            raise ValueError(f"timechat.encode: lengths must lie in [0, {want[0]}], got {lengths.tolist()}")

    def timestamps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask (T, L): one instruction per frame of the grid, padding longest, max_length 32."""
        tok = self.tokenizer(
            timestamp_texts(self.grid), padding="longest", truncation=True,
            max_length=MAX_TEXT_LEN, return_tensors="pt",
        )  # fmt: skip
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 224, 224, 3) uint8 -> (N, 3, 224, 224) float32, /255 then CLIP mean/std."""
        x = frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
        return (x - self.mean) / self.std

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Padded frames are encoded as they are (black frames, as the paper pads); ``lengths`` is validated."""
        self.check_inputs(batch, lengths)
        b, t = batch.shape[:2]
        with torch.inference_mode():
            ids, mask = self.timestamps()  # (T, L)
            flat = batch.flatten(0, 1)  # (B*T, H, W, 3)
            ids_all, mask_all = ids.repeat(b, 1), mask.repeat(b, 1)  # (B*T, L), frame-major per clip
            tokens = []
            for i in range(0, flat.shape[0], self.frame_batch):
                j = i + self.frame_batch
                tokens.append(self.model.encode_frames(self.preprocess(flat[i:j]), ids_all[i:j], mask_all[i:j]).float())
            frame_tokens = torch.cat(tokens).unflatten(0, (b, t))  # (B, T, Q + L, H)
            out = self.model.encode_video(frame_tokens)  # (B, W, Qv, D)
        return out.float().cpu()


def _tokenizer_vocab_check(tokenizer, cfg: TimeChatConfig) -> None:
    if len(tokenizer) > cfg.qformer.vocab_size:
        raise ValueError(
            f"timechat: the tokenizer has {len(tokenizer)} tokens (with [DEC]) but the Q-Former embeds only "
            f"{cfg.qformer.vocab_size}; use bert-base-uncased for the full model"
        )


def build(params: dict, device: str = "cpu", grid: ClipGrid | None = None) -> TimeChatEncoder:
    """params: ``model`` full|tiny; ``eva_vit``, ``instructblip``, ``timechat`` (files or hub refs; for tiny,
    optional: without them the weights are seeded random); ``tokenizer`` (full: folder or hub id, default
    bert-base-uncased); ``window``/``stride`` (4/4); ``llama_proj`` (bool, default false); ``seed`` (tiny);
    ``half`` (ViT in fp16, CUDA only); ``frame_batch`` (frames per ViT call, default 40). ``grid``: the frames'
    clip grid (default 4 FPS, 10 s): the frame count and the instruction times."""
    grid = grid or ClipGrid()
    kind, half = build_options("timechat", params, device)
    frame_batch = positive_int("timechat", params, "frame_batch", FRAME_BATCH)
    run = {"window": int(params.get("window", 4)), "stride": int(params.get("stride", 4)), "fps": float(grid.fps)}
    cfg = (TimeChatConfig.tiny if kind == "tiny" else TimeChatConfig.full)(**run)
    problems = grid.reader_problems("timechat", size=IMAGE_SIZE, max_frames=cfg.max_frame_pos,
                                    why="video_frame_position_embedding rows")
    if problems:
        raise ValueError(problems[0])
    if not params.get("llama_proj", False):
        cfg.llama_dim = 0
    files = [(k, params.get(k), pre) for k, pre in (("eva_vit", "visual_encoder."), ("instructblip", ""), ("timechat", ""))]
    if kind == "full" or (kind == "tiny" and any(p for _, p, _ in files)):
        model = empty_on_cpu(lambda: TimeChatVisual(cfg))
        for name, buf in model.named_buffers():
            if name.endswith("position_ids"):
                buf.copy_(torch.arange(buf.shape[1]).expand(1, -1))
        resolved, identity = [], {}
        for key, ref, prefix in files:
            if not ref:
                raise ValueError(f"timechat params: '{key}' is required when loading checkpoints (model {kind!r})")
            path, identity[key] = resolve_file(params, key, "timechat_7b.pth" if key == "timechat" else None)
            resolved.append((key, path, prefix))
        load_timechat_weights(model, resolved)
    else:
        seed = int(params.get("seed", 0))
        model = init_tiny_weights_(TimeChatVisual(cfg), seed)
        identity = {f"{kind.replace('-', '_')}_seed": seed}  # random-full: the released size (smoke_full.py)
    # random-full keeps the offline tiny WordPiece vocabulary: its ids fit the full embedding table
    tokenizer = load_bert_tokenizer(str(params.get("tokenizer", "bert-base-uncased"))) if kind == "full" else make_tiny_tokenizer()
    _tokenizer_vocab_check(tokenizer, cfg)
    model = freeze(model).to(device)
    if half:
        model.use_fp16_vit()
    shape = (cfg.n_windows(grid.n_frames), cfg.num_video_query, cfg.out_dim)
    info = EncoderInfo(name="timechat", input_kind="frames", output_shape=shape, config={**asdict(cfg), "half": half},
                       checkpoint=identity)
    log.info("timechat: built %s model, %d windows x %d x %d on %s%s", kind, *info.output_shape, device, " (ViT fp16)" if half else "")
    return TimeChatEncoder(model, tokenizer, info, device=device, frame_batch=frame_batch, grid=grid)


def preflight(params: dict, device: str) -> list[str]:
    """What ``build(params, device)`` would trip over, found without loading weights: half on CPU, and the three
    checkpoints merged in load order (memory-mapped) against the full model built on meta."""
    out = half_problem("timechat", params, device)
    if params.get("model", "full") != "full":
        return out
    cfg = TimeChatConfig.full(window=int(params.get("window", 4)), stride=int(params.get("stride", 4)))
    if not params.get("llama_proj", False):
        cfg.llama_dim = 0
    files = [(k, existing_file(params.get(k)), pre) for k, pre in
             (("eva_vit", "visual_encoder."), ("instructblip", ""), ("timechat", ""))]
    if not all(p for _, p, _ in files):
        return out  # a missing file is reported by the generic check
    own = meta_state(lambda: TimeChatVisual(cfg))
    merged: dict[str, tuple] = {}
    for what, path, prefix in files:
        state = unwrap(read_weights(path, f"timechat: {what}"), source=f"timechat {what} checkpoint {path.name}")
        merged.update({prefix + k: v for k, v in shapes_of(state).items()})
    names = ", ".join(p.name for _, p, _ in files)
    return out + shape_problems(f"timechat checkpoints {names}", own, merged,
                                shape_ok=("video_frame_position_embedding.weight",))
