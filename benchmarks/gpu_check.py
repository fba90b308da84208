"""One command for the day a GPU is lent: every network at full size (random weights, no download), timed.

    .venv/bin/python benchmarks/gpu_check.py                 # one H100/H200: under 8 minutes
    .venv/bin/python benchmarks/gpu_check.py --reduced       # tiny sizes, a few steps, CPU (the test suite runs it)

Sections (``--sections``; one failing is reported and the others still run; exit status 1 if any failed):

1. ``encoders``: CAVP, TimeChat (EVA ViT-g + Q-Formers) and AudioMAE at full size in their production dtype
   (``half`` and ``batch_size`` from stages.yaml: CAVP fp32, TimeChat's ViT fp16, AudioMAE fp32): clips/s, peak
   GPU memory, batch size. Input copied from the host as the stage does; output copied back.
2. ``mapper``: GPT-2 124M (AudioLDM-2's shape, random weights) + fusion trained at batch 48 with bf16 autocast
   through the trainer's own ``train_step``, eager and under each ``--compile-modes``: compile time, steps/s, the
   projected time of 40 epochs x 77,000 clips, and model FLOP/s (6 x parameters x tokens per step).
3. ``audioldm2``: AudioLDM-2 at the released sizes (frozen/audioldm2.py), fp16, a batch of ``--clips``
   10.24 s clips, DDIM 100 steps, CFG 3.5: our path (``generate_audio``: T5 + conditioning + pipeline) against
   the same ``AudioLDM2Pipeline.__call__`` made directly with precomputed embeddings, alternating; s/clip.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAPER_STEPS = 40 * 77_000 // 48  # optimizer steps of the paper's run at global batch 48


class Clock:
    """Wall time with device synchronisation; peak memory of the device (CUDA) since the last reset."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")

    def time(self, fn, n: int = 1) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / n


# ------------------------------------------------------------------------------------------------- encoders
def random_encoder(name: str, size: str, device: torch.device, half: bool, grid):
    """The stage's encoder wrapper around a randomly initialised network of ``size`` (full | tiny) reading the
    frames of ``grid`` (frozen/grid.py)."""
    from frozen.base import EncoderInfo, freeze

    with torch.device(device):
        if name == "cavp":
            from frozen.cavp import CAVPConfig, CAVPEncoder, CAVPVideoEncoder

            cfg = getattr(CAVPConfig, size)()
            model = freeze(CAVPVideoEncoder(cfg))
            info = EncoderInfo("cavp", "frames", (grid.n_frames, cfg.proj_dim), asdict(cfg))
            return CAVPEncoder(model.half() if half else model, info, device=str(device), half=half, chunk_frames=40,
                               grid=grid)
        if name == "timechat":
            from frozen.timechat import TimeChatConfig, TimeChatEncoder, TimeChatVisual, make_tiny_tokenizer

            cfg = getattr(TimeChatConfig, size)(window=4, stride=4, fps=float(grid.fps))
            cfg.llama_dim = 0
            model = freeze(TimeChatVisual(cfg))
            if half:
                model.use_fp16_vit()
            info = EncoderInfo("timechat", "frames", (cfg.n_windows(grid.n_frames), cfg.num_video_query, cfg.out_dim),
                               asdict(cfg))
            return TimeChatEncoder(model, make_tiny_tokenizer(), info, device=str(device), frame_batch=40, grid=grid)
        from frozen.audiomae import AudioMAEConfig, AudioMAEEncoder, AudioMAEViT

        cfg = getattr(AudioMAEConfig, size)()
        model = freeze(AudioMAEViT(cfg))
        info = EncoderInfo("audiomae", "audio", (cfg.num_tokens, cfg.width), asdict(cfg))
        return AudioMAEEncoder(model.half() if half else model, info, device=str(device), half=half)


def check_encoders(args, device: torch.device, clock: Clock) -> None:
    from frozen.grid import grid_of

    stages = yaml.safe_load((REPO / "stages.yaml").read_text())["stages"]
    grid = grid_of(stages["frames"]["params"])  # the paper's: 40 frames of 224 px, 160,000 samples
    size = "tiny" if args.reduced else "full"
    g = torch.Generator().manual_seed(0)
    for name in ("cavp", "timechat", "audiomae"):
        half = bool(stages[name]["params"].get("half")) and device.type == "cuda"
        batch = 1 if args.reduced else int(args.encoder_batch or stages[name]["runtime"]["batch_size"])
        enc = random_encoder(name, size, device, half, grid)
        if name == "audiomae":
            x, lengths = torch.randn(batch, grid.n_samples, generator=g) * 0.1, torch.full((batch,), grid.n_samples)
        else:
            x = torch.randint(0, 256, (batch, *grid.frame_shape), dtype=torch.uint8, generator=g)
            lengths = torch.full((batch,), grid.n_frames)
        out = enc.encode(x, lengths)  # warm-up (kernels, cuDNN autotuning)
        assert out.shape == (batch, *enc.info.output_shape) and torch.isfinite(out).all(), f"{name}: bad output"
        clock.reset_peak()
        dt = clock.time(lambda: enc.encode(x, lengths), n=args.encoder_batches)
        print(f"  {name:9s} {size} {'fp16' if half else 'fp32'}: {batch / dt:8.2f} clips/s  batch {batch}  "
              f"peak {clock.peak_gib():6.2f} GiB  ({dt * 1e3:.0f} ms/batch)")
        del enc
        clock.reset_peak()


# ------------------------------------------------------------------------------------------------- mapper
def mapper_dims(reduced: bool) -> dict:
    if reduced:
        return {"cavp_steps": 40, "cavp_dim": 16, "timechat_windows": 10, "timechat_queries": 4,
                "timechat_dim": 24, "n_tokens": 8, "target_dim": 32, "timechat_stride": 4}
    return {"cavp_steps": 40, "cavp_dim": 512, "timechat_windows": 10, "timechat_queries": 32, "timechat_dim": 768,
            "n_tokens": 8, "target_dim": 768, "timechat_stride": 4}


def check_mapper(args, device: torch.device, clock: Clock) -> None:
    from trainer.config import TrainConfig
    from trainer.mapper import build_mapper
    from trainer.train import maybe_compile, train_step

    dims, batch = mapper_dims(args.reduced), 4 if args.reduced else 48
    g = torch.Generator().manual_seed(0)
    pool = 4 * batch  # device-resident rows, indexed per step like the trainer's in-memory loader
    feats = [torch.randn(pool, 40, dims["cavp_dim"], generator=g).to(device),
             torch.randn(pool, 10, dims["timechat_queries"], dims["timechat_dim"], generator=g).to(device),
             torch.randn(pool, 8, dims["target_dim"], generator=g).to(device)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for mode in args.compile_modes.split(","):
        cfg = TrainConfig(model="tiny" if args.reduced else "full", pretrained=False, compile=mode,
                          device=str(device), global_batch=batch)
        mapper = build_mapper(cfg, dims).to(device).train()
        model = maybe_compile(mapper, cfg, device)
        params = [p for p in mapper.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

        def step():
            idx = torch.randint(0, pool, (batch,), device=device)
            return train_step(model, opt, sched, params, cfg, [tuple(f.index_select(0, idx) for f in feats)],
                              autocast, ddp=False)

        t_compile = clock.time(step, n=args.warmup)  # compiles on the first step(s)
        loss = step()
        per = clock.time(step, n=args.train_steps)
        assert torch.isfinite(loss), f"mapper ({mode}): loss is {float(loss)}"
        n_params = sum(p.numel() for p in params)
        tokens = batch * (40 + 8 - 1)
        print(f"  mapper compile={mode:16s} {1 / per:7.2f} steps/s  (warm-up {args.warmup} steps "
              f"{t_compile * args.warmup:6.1f} s)  40 ep x 77k clips: {PAPER_STEPS * per / 60:7.1f} min  "
              f"{6 * n_params * tokens / per / 1e12:6.1f} TFLOP/s  ({n_params / 1e6:.0f}M params)")
        del model, mapper, opt


# ------------------------------------------------------------------------------------------------- AudioLDM-2
def build_audioldm2(reduced: bool, device: torch.device):
    from diffusers import AudioLDM2Pipeline

    from infer.audioldm2 import tiny_components
    from frozen.audioldm2 import full_components

    with torch.device(device):
        comps = tiny_components({"seed": 0}) if reduced else full_components(seed=0)
    pipe = AudioLDM2Pipeline(**comps)
    pipe = pipe.to(device, torch.float16 if device.type == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_audioldm2(args, device: torch.device, clock: Clock) -> None:
    from infer.audioldm2 import conditioning, generate_audio, generated_stream_width

    pipe = build_audioldm2(args.reduced, device)
    n, steps = args.clips, (2 if args.reduced else args.gen_steps)
    tokens = torch.randn(n, 8, generated_stream_width(pipe), generator=torch.Generator().manual_seed(0))
    labels = (["dog bow-wow", "car engine running"] * n)[:n]
    seeds = list(range(n))
    common = dict(num_inference_steps=steps, guidance_scale=3.5, audio_length_in_s=10.24, eta=0.0)

    def ours():
        return generate_audio(pipe, tokens, labels, seed=seeds, steps=steps, guidance=3.5, audio_seconds=10.24)

    cond = conditioning(pipe, tokens, labels)

    def direct():
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return pipe(prompt=None, generator=gens, output_type="np", **common, **cond).audios

    a = ours()
    assert a.shape[0] == n and np.isfinite(a).all(), "audioldm2: non-finite audio"
    direct()
    clock.reset_peak()
    t_ours, t_direct = [], []
    for i in range(args.gen_repeats):
        for fn, acc in ((ours, t_ours), (direct, t_direct))[:: 1 if i % 2 == 0 else -1]:
            acc.append(clock.time(fn) / n)
    m_o, m_d = statistics.median(t_ours), statistics.median(t_direct)
    dtype = "fp16" if device.type == "cuda" else "fp32"
    print(f"  audioldm2 {'tiny' if args.reduced else 'full'} {dtype} DDIM {steps} CFG 3.5, batch {n} x 10.24 s: "
          f"ours {m_o:.3f} s/clip, direct AudioLDM2Pipeline {m_d:.3f} s/clip, ratio {m_o / m_d:.3f}  "
          f"peak {clock.peak_gib():.2f} GiB")


SECTIONS = {"encoders": check_encoders, "mapper": check_mapper, "audioldm2": check_audioldm2}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reduced", action="store_true", help="tiny sizes and few steps (CPU, the test suite)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cuda | cpu")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    ap.add_argument("--encoder-batch", type=int, default=None, help="override stages.yaml's batch sizes")
    ap.add_argument("--encoder-batches", type=int, default=5, help="timed batches per encoder")
    ap.add_argument("--train-steps", type=int, default=300, help="timed optimizer steps per compile mode")
    ap.add_argument("--warmup", type=int, default=20, help="untimed first steps (compilation happens here)")
    ap.add_argument("--compile-modes", default="off,default,reduce-overhead", help="torch.compile modes to time")
    ap.add_argument("--clips", type=int, default=4, help="AudioLDM-2 batch")
    ap.add_argument("--gen-steps", type=int, default=100)
    ap.add_argument("--gen-repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.reduced:
        args.encoder_batches, args.train_steps, args.warmup, args.clips, args.gen_repeats = 1, 3, 1, 2, 1
    return args


def main(argv=None) -> int:
    args = parse(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cpu" and not args.reduced:
        print("no GPU: use --reduced on CPU (full sizes would take hours)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {name}, torch {torch.__version__}{' (reduced)' if args.reduced else ''}")
    failed = []
    for section in args.sections.split(","):
        t0 = time.perf_counter()
        print(f"[{section}]")
        try:
            SECTIONS[section](args, device, Clock(device))
        except Exception as e:  # report and go on: one device session must show every section
            failed.append(section)
            print(f"  FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(limit=6)
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    print("gpu_check: " + (f"FAILED sections {failed}" if failed else "all sections ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
