"""Typed configs of the train stage: ``TrainConfig`` (what stages.yaml ``train.params`` holds) and ``MapperSpec``
(the architecture actually built, with the sizes read from the cache; saved next to the weights)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from pydantic import create_model

Fusion = Literal["concat", "add", "cat"]  # paper Table 3: channel-wise + proj (Algorithm 1), add, cat along time
Encoders = Literal["both", "cavp", "timechat"]  # paper Table 2
TcPool = Literal["mean", "max", "none"]  # per-window pooling of TimeChat's 32 queries ("none": keep them, cat only)
Upsample = Literal["nearest", "window", "linear"]  # window: frame t takes the window holding it (needs the stride)
Loss = Literal["mse", "l1"]
Schedule = Literal["none", "cosine"]
FUSIONS, ENCODERS, TC_POOLS = get_args(Fusion), get_args(Encoders), get_args(TcPool)
UPSAMPLES, LOSSES, SCHEDULES = get_args(Upsample), get_args(Loss), get_args(Schedule)
Mapper = Literal["autoregressive", "diffusion", "v2a_regression", "v2a_diffusion"]  # paper 3.4 | 4.4.3 | V2A-Mapper
PredictionType = Literal["sample", "epsilon", "v_prediction"]  # what the diffusion mappers' output stands for
BetaSchedule = Literal["squaredcos_cap_v2", "linear", "scaled_linear"]
MAPPERS, PREDICTION_TYPES, BETA_SCHEDULES = get_args(Mapper), get_args(PredictionType), get_args(BetaSchedule)
Compile = Literal["auto", "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES = get_args(Compile)


@dataclass
class TrainConfig:
    # --- model -------------------------------------------------------------------------------------------
    # autoregressive (MFM-Mapper) | diffusion (Diff-Mapper) | v2a_regression | v2a_diffusion (V2A-Mapper: clip -> clap)
    mapper: Mapper = "autoregressive"
    model: Literal["full", "tiny"] = "full"  # full: GPT-2 from AudioLDM-2 (768 x 12); tiny: seeded random GPT-2 for tests/demo
    gpt2: str = "cvssp/audioldm2"  # local diffusers folder (<root>/language_model/) or hub id (full only)
    gpt2_subfolder: str = "language_model"
    pretrained: bool = True  # full: load AudioLDM-2's weights; False = same shape, random init (benchmarks)
    n_embd: int | None = None  # tiny only; None = the cached AudioMAE dim (so no target projection is needed)
    dropout: float | None = None  # None: full keeps the checkpoint's (0.1), tiny uses 0.0
    target_proj: bool = False  # Linear in/out around the targets when GPT-2 width != AudioMAE dim
    sos_eos: bool = False  # learned SOS/EOS around the visual prefix (AudioLDM-2 does it; the paper is silent)
    # --- diffusion mappers (Diff-Mapper, V2A-Mapper generative; the papers are silent: our defaults) -------
    prediction_type: PredictionType = "sample"  # the output at the learnable tokens: clean tokens (DALL-E 2 prior, V2A-Mapper)
    diffusion_steps: int = 1000  # DDPMScheduler training timesteps
    beta_schedule: BetaSchedule = "squaredcos_cap_v2"  # cosine schedule (DALL-E 2 prior)
    sample_steps: int = 50  # DDIM steps at generation and validation
    sample_eta: float = 0.0  # DDIM eta (0 = deterministic given the initial noise)
    normalize_targets: bool = True  # diffuse (target - train mean) / train std, undone after sampling
    # --- V2A-Mapper (trainer/v2a_mapper.py) ----------------------------------------------------------------
    v2a_aggregate: Literal["mean", "max"] = "mean"  # regression mapper: CLIP frames -> one vector (mean over the frames)
    v2a_width: int = 768  # hidden width of the regression MLP / the generative transformer
    v2a_layers: int = 6  # generative mapper: transformer layers (regression MLP: hidden layers)
    v2a_heads: int = 12  # 768 x 6 x 12: 45.1M trainable (CLIP 768 -> CLAP 512), the MFM paper quotes 48.83M
    # --- fusion (paper 3.2) ------------------------------------------------------------------------------
    encoders: Encoders = "both"
    fusion: Fusion = "concat"
    tc_pool: TcPool = "mean"
    upsample: Upsample = "nearest"
    timechat_stride: int | None = None  # upsample 'window': frames per window step; None = the cache's attrs
    # --- expected cache (None = accept what the cache holds; an int is checked) ---------------------------
    cavp_dim: int | None = None
    timechat_dim: int | None = None
    timechat_windows: int | None = None
    cavp_steps: int = 40
    n_tokens: int = 8
    audiomae_dim: int | None = None
    # --- optimisation (paper 4.1.2) ----------------------------------------------------------------------
    loss: Loss = "mse"
    lr: float = 1e-3
    weight_decay: float = 0.01  # torch's AdamW default; the paper is silent
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 40
    global_batch: int = 48  # = micro_batch x world size x accumulation
    micro_batch: int | None = None  # per process per step; None = global_batch / world size
    grad_clip: float = 0.0  # 0 = off
    schedule: Schedule = "none"
    warmup_steps: int = 0
    seed: int = 0
    # --- data ------------------------------------------------------------------------------------------
    subset_fraction: float = 1.0  # class-stratified share of the usable training rows (paper: 0.4; trainer/subset.py)
    subset_seed: int = 0  # seed of that choice (independent of the training seed)
    val_fraction: float = 0.05  # held out of train, seeded, only when the cache has no val rows
    in_memory: Literal["auto", "yes", "no"] = "auto"  # auto | yes | no: load the needed rows once instead of reading zarr per batch
    max_memory_gb: float = 32.0  # auto: in memory when the selected rows take less than this
    val_max_clips: int | None = None  # cap validation (AR rollout is 8 forward passes)
    save_every: int = 0  # > 0: also keep the weights after epochs k, 2k, ... and the last in <run>/epochs/ (Fig. 3)
    # --- runtime ---------------------------------------------------------------------------------------
    device: str = "auto"
    bf16: bool = True  # autocast on GPU only
    compile: Compile = "auto"  # torch.compile: auto (default mode on CUDA, off on CPU) | off | default | reduce-overhead
    log_every: int = 50  # steps between progress-bar loss updates (each one waits for the device)
    ckpt_every_steps: int = 0  # extra `last/` checkpoints inside an epoch (0 = end of epoch only)
    tensorboard: bool = False  # also log to <run>/tb (optional extra: pip install 'mfm-mapper[tensorboard]')
    extra: dict[str, Any] = field(default_factory=dict)  # ignored keys, kept for the record

    def __post_init__(self):
        for name, allowed in (("encoders", ENCODERS), ("fusion", FUSIONS), ("tc_pool", TC_POOLS),
                              ("upsample", UPSAMPLES), ("loss", LOSSES), ("schedule", SCHEDULES),
                              ("model", ("full", "tiny")), ("in_memory", ("auto", "yes", "no")),
                              ("mapper", MAPPERS), ("prediction_type", PREDICTION_TYPES),
                              ("beta_schedule", BETA_SCHEDULES), ("v2a_aggregate", ("mean", "max")),
                              ("compile", COMPILE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train params: {name}={getattr(self, name)!r} is not one of {allowed}")
        if self.tc_pool == "none" and self.fusion != "cat" and self.encoders != "cavp":
            raise ValueError("train params: tc_pool='none' keeps 32 tokens per window, which only the 'cat' fusion "
                             "(along time) can use; pick tc_pool mean|max or fusion cat")
        if self.fusion != "concat" and self.encoders != "both":
            raise ValueError(f"train params: fusion={self.fusion!r} needs encoders='both' (got {self.encoders!r})")
        if self.global_batch < 1 or self.epochs < 0 or self.lr <= 0:
            raise ValueError("train params: global_batch >= 1, epochs >= 0 and lr > 0 are required")
        if self.save_every < 0:
            raise ValueError(f"train params: save_every={self.save_every} must be >= 0 (0 = no per-epoch weights)")
        if not 0.0 < self.subset_fraction <= 1.0:
            raise ValueError(f"train params: subset_fraction={self.subset_fraction} must be in (0, 1]")
        if self.diffusion_steps < 2 or not 1 <= self.sample_steps <= self.diffusion_steps:
            raise ValueError(f"train params: need diffusion_steps >= 2 and 1 <= sample_steps <= diffusion_steps "
                             f"(got {self.diffusion_steps}, {self.sample_steps})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"train params: val_fraction={self.val_fraction} must be in [0, 1)")
        self.betas = tuple(self.betas)

    @classmethod
    def from_dict(cls, params: dict | None) -> "TrainConfig":
        """Build from stages.yaml ``train.params``; unknown keys are an error (a typo must not be ignored)."""
        params = dict(params or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(params) - names - {"extra"})
        if unknown:
            raise ValueError(f"train params: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**params)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro_batch, accumulation steps) so that micro x world x accum == global_batch, or raise."""
        micro = self.micro_batch or max(1, self.global_batch // world_size)
        per_step = micro * world_size
        if self.global_batch % per_step:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch {micro} x "
                             f"{world_size} processes; change micro_batch or global_batch")
        return micro, self.global_batch // per_step

    @property
    def is_v2a(self) -> bool:
        """V2A-Mapper: CLIP frames -> CLAP audio embedding (instead of CAVP/TimeChat -> pooled AudioMAE)."""
        return self.mapper.startswith("v2a_")

    def diffusion_spec(self) -> dict:
        """The diffusion settings a diffusion mapper saves with its weights (rebuilds its schedulers)."""
        return {"prediction_type": self.prediction_type, "train_steps": self.diffusion_steps,
                "beta_schedule": self.beta_schedule, "sample_steps": self.sample_steps, "eta": self.sample_eta,
                "normalize": self.normalize_targets}


# Options that change how, not what, is trained: stages.yaml `train.runtime` (not fingerprinted); same types and
# defaults as TrainConfig's fields (one definition).
RUNTIME_KEYS = ("device", "bf16", "compile", "log_every", "ckpt_every_steps", "in_memory", "max_memory_gb",
                "tensorboard")
_hints, _fields = get_type_hints(TrainConfig, include_extras=True), {f.name: f for f in dataclasses.fields(TrainConfig)}
TrainRuntime = create_model("TrainRuntime", **{k: (_hints[k], _fields[k].default) for k in RUNTIME_KEYS})


@dataclass
class MapperSpec:
    """Everything needed to rebuild the mapper without the cache or the hub (saved as ``mapper.json``)."""

    encoders: str
    fusion: str
    tc_pool: str
    upsample: str
    cavp_steps: int
    cavp_dim: int
    timechat_windows: int
    timechat_queries: int
    timechat_dim: int
    n_tokens: int
    timechat_stride: int | None
    target_dim: int
    sos_eos: bool
    target_proj: bool
    gpt2_config: dict  # GPT2Config.to_dict() subset
    kind: str = "autoregressive"  # autoregressive | diffusion (trainer/diffusion_mapper.py)
    diffusion: dict = field(default_factory=dict)  # diffusion mapper: schedule, prediction type, sampler

    @property
    def width(self) -> int:
        return int(self.gpt2_config["n_embd"])

    @property
    def tc_steps(self) -> int:
        """TimeChat steps in the prefix for the 'cat' fusion (windows, or windows x queries unpooled)."""
        return self.timechat_windows * (self.timechat_queries if self.tc_pool == "none" else 1)

    @property
    def prefix_len(self) -> int:
        if self.encoders == "timechat" or self.fusion != "cat":
            n = self.cavp_steps
        else:
            n = self.cavp_steps + self.tc_steps
        return n + (2 if self.sos_eos else 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MapperSpec":
        return cls(**{"timechat_stride": None, **d})
