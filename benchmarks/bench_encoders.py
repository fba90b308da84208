"""Throughput and peak memory of the encoder stages (cavp, timechat, audiomae): stage path vs bare forward.

    .venv/bin/python benchmarks/bench_encoders.py [--clips 8] [--batch-size 4] [--shard-size 4]
        [--config tiny|full] [--device auto|cpu|cuda] [--half] [--encoders cavp,timechat,audiomae]
        [--repeats 5] [--threads 0] [--dir DIR]

A tiny project is built in a temporary folder: ``--clips`` synthetic clips (pipeline.demo_data), then the frames
stage (v2a Runner, stages.yaml + configs/demo.yaml with path overrides). For each encoder, in a fresh subprocess:
1. ``stage``: ``Runner.run([name], force=True, only=True)``, i.e. read the frames shards (iter_shard: untar, H.264
   and FLAC decode), encode in batches, write the zarr array, one shard at a time (pipeline.encode).
2. ``bare`` (baseline, same run): the same clips decoded beforehand and stacked into the same batches (per shard,
   ``--batch-size``), only ``encoder.encode`` timed.
Each subprocess builds the encoder once and runs one warm-up batch (reported apart, excluded from both timings),
then times ``--repeats`` passes over all the clips; the best pass counts (the machine may be shared). Clips/s
counts every clip of the shards (the audio encoder skips clips without usable audio in both modes, as the stage does).
stage/bare = stage time / bare time: the cost of decoding and writing on top of the forward pass. The stage's time
is also split into the time inside ``encoder.encode`` and the rest (decode not hidden by the prefetch thread, zarr
writes, set-up); the shards' read+decode time measured alone (serial, once, in the bare subprocess) is printed too.
Peak memory: ru_maxrss of the subprocess (whole process: Python, torch, model, data); on CUDA also
torch.cuda.max_memory_allocated. Wall and process CPU time (all threads) are both reported.

``--config tiny`` (default): the demo's tiny seeded models, CPU by default, about 1-2 minutes on 2 cores.
``--config full``: the paper-size architectures (ResNet3D-50 CAVP, EVA ViT-g + Q-Formers, AudioMAE ViT-B) with
seeded random weights, no checkpoint is read; meant for a GPU (``--device cuda --half``). TimeChat then uses the
offline tiny WordPiece tokenizer (same timestamp text, same token count as bert-base-uncased for it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENCODERS = ("cavp", "timechat", "audiomae")
TARGET_CLIPS = 200_000
MARK = "@@BENCH_RESULT@@ "


# ------------------------------------------------------------------------------------------ configuration


def overrides(root: Path, args) -> list[str]:
    """``--set``-style overrides: the project's paths in ``root``, and the encoders' runtime/precision."""
    sets = [f"paths.videos={root / 'videos'}", f"paths.labels={root / 'videos' / 'labels.csv'}",
            f"paths.cache={root / 'cache'}", f"paths.runs={root / 'runs'}", f"paths.outputs={root / 'outputs'}",
            f"stages.frames.params.shard_size={args.shard_size}"]
    for name in ENCODERS:
        sets += [f"stages.{name}.runtime.batch_size={args.batch_size}", f"stages.{name}.runtime.device={args.device}",
                 f"stages.{name}.params.half={'true' if args.half else 'false'}"]
    return sets


def load(root: Path, args):
    from v2a.config import load_config

    return load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"], overrides(root, args))


# ------------------------------------------------------------------------------------------ encoders


def build_full_random(name: str, params: dict, device: str):
    """The full-size architecture with seeded random weights (the modules' init_tiny_weights_), no checkpoint."""
    from dataclasses import asdict

    import torch

    from frozen import audiomae, cavp, timechat
    from frozen.base import EncoderInfo, freeze
    from frozen.grid import ClipGrid

    grid = ClipGrid()  # the paper's: 40 frames at 4 FPS, 224 px

    seed, half = int(params.get("seed", 0)), bool(params.get("half", False))
    if name == "cavp":
        cfg = cavp.CAVPConfig.full()
        model = freeze(cavp.init_tiny_weights_(cavp.CAVPVideoEncoder(cfg), seed)).to(device)
        model = model.half() if half else model
        info = EncoderInfo("cavp", "frames", (grid.n_frames, cfg.proj_dim), asdict(cfg), {"random_seed": seed})
        return cavp.CAVPEncoder(model, info, device=device, half=half, chunk_frames=int(params.get("chunk_frames", 40)),
                                grid=grid)
    if name == "timechat":
        run = {"window": int(params.get("window", 4)), "stride": int(params.get("stride", 4)), "fps": float(grid.fps)}
        cfg = timechat.TimeChatConfig.full(**run)
        if not params.get("llama_proj", False):
            cfg.llama_dim = 0
        with torch.device("meta"):  # skip the default init of a 1B-parameter ViT: init_tiny_weights_ fills it
            model = timechat.TimeChatVisual(cfg)
        model = model.to_empty(device="cpu")
        for bname, buf in model.named_buffers():
            if bname.endswith("position_ids"):
                buf.copy_(torch.arange(buf.shape[1]).expand(1, -1))
        model = freeze(timechat.init_tiny_weights_(model, seed)).to(device)
        if half:
            model.use_fp16_vit()
        info = EncoderInfo("timechat", "frames", (cfg.n_windows(grid.n_frames), cfg.num_video_query, cfg.out_dim),
                           {**asdict(cfg), "half": half}, {"random_seed": seed})
        return timechat.TimeChatEncoder(model, timechat.make_tiny_tokenizer(), info, device=device,
                                        frame_batch=int(params.get("frame_batch", 40)), grid=grid)
    cfg = audiomae.AudioMAEConfig.full()
    model = freeze(audiomae.init_tiny_weights_(audiomae.AudioMAEViT(cfg), seed)).to(device)
    model = model.half() if half else model
    info = EncoderInfo("audiomae", "audio", (cfg.num_tokens, cfg.width), asdict(cfg), {"random_seed": seed})
    return audiomae.AudioMAEEncoder(model, info, device=device, half=half)


def dummy_batch(encoder, b: int):
    import torch

    if encoder.info.input_kind == "frames":
        t = encoder.grid.n_frames
        return torch.zeros((b, *encoder.grid.frame_shape), dtype=torch.uint8), torch.full((b,), t)
    x = 0.1 * torch.sin(torch.arange(160_000, dtype=torch.float32) * 0.05).expand(b, -1).contiguous()
    return x, torch.full((b,), 160_000)


# ------------------------------------------------------------------------------------------ worker (subprocess)


def worker(spec: dict) -> dict:
    import importlib
    import logging

    import numpy as np
    import torch

    from pipeline.encode import _usable, pick_device
    from frozen.grid import grid_of
    from pipeline.framestore import iter_shard, read_plan
    from v2a.runner import Runner

    logging.basicConfig(level=logging.WARNING)
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    root, name, mode = Path(spec["root"]), spec["encoder"], spec["mode"]
    cfg = load(root, args)
    device = pick_device(args.device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    mod = importlib.import_module(f"frozen.{name}")
    real_build = mod.build
    marks: dict[str, float] = {}

    def build(params: dict, device: str = "cpu", **grid):  # grid=: the frames' clip grid (frame encoders)
        if "enc" not in marks:  # built once per process, reused by the repeats
            t = time.perf_counter()
            enc = build_full_random(name, params, device) if args.config == "full" else real_build(params, device,
                                                                                                    **grid)
            x, lengths = dummy_batch(enc, args.batch_size)
            enc.encode(x, lengths)  # warm-up: first-call kernel selection, allocator growth
            marks["enc"], marks["setup_s"] = enc, time.perf_counter() - t
            if mode == "stage":  # time spent inside encode during the stage run
                forward = enc.encode

                def timed(x, lengths):
                    t0 = time.perf_counter()
                    y = forward(x, lengths)
                    marks["encode_s"] += time.perf_counter() - t0
                    return y

                enc.encode = timed
        marks["ready"], marks["ready_cpu"], marks["encode_s"] = time.perf_counter(), time.process_time(), 0.0
        return marks["enc"]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    frames_dir = cfg.frames_dir
    plan = read_plan(frames_dir)
    n_clips, n_shards, grid = plan["n_clips"], plan["n_shards"], grid_of(plan["params"])
    if mode == "stage":
        mod.build = build  # pipeline.encode looks the builder up at call time
        walls, cpus, encodes = [], [], []
        for _ in range(args.repeats):
            ran = Runner(cfg).run([name], force=True, only=True, progress=False)
            sync()
            t1, c1 = time.perf_counter(), time.process_time()
            assert ran == [name], ran
            walls.append(t1 - marks["ready"])
            cpus.append(c1 - marks["ready_cpu"])  # process CPU time: every thread (prefetch included)
            encodes.append(marks["encode_s"])
        encoded, decode_s, encode_s = None, None, encodes[walls.index(min(walls))]
    else:
        enc = build({k: v for k, v in cfg.stage(name).params.items() if k != "dtype"}, device)
        kind = enc.info.input_kind
        batches, t = [], time.perf_counter()
        for k in range(n_shards):  # the stage's grouping: per shard, usable clips, batch_size at a time
            clips = [c for c in iter_shard(frames_dir, k, want_frames=kind == "frames", want_audio=kind == "audio",
                                           grid=grid)
                     if _usable(kind, c.meta)]
            for b in range(0, len(clips), args.batch_size):
                part = clips[b: b + args.batch_size]
                if kind == "frames":
                    batches.append((torch.from_numpy(np.stack([c.frames for c in part])),
                                    torch.tensor([c.meta["n_frames"] for c in part])))
                else:
                    batches.append((torch.from_numpy(np.stack([c.audio for c in part])),
                                    torch.tensor([c.meta["audio_len"] for c in part])))
        decode_s = time.perf_counter() - t  # reading + decoding the shards, serial, one pass
        encoded = sum(len(x) for x, _ in batches)
        walls, cpus = [], []
        for _ in range(args.repeats):
            sync()
            t, c = time.perf_counter(), time.process_time()
            for x, lengths in batches:
                enc.encode(x, lengths).float().numpy()
            sync()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        encode_s = min(walls)
    out = {"encoder": name, "mode": mode, "clips": n_clips, "encoded": encoded, "wall_s": min(walls),
           "cpu_s": min(cpus),
           "walls": walls, "encode_s": encode_s, "decode_s": decode_s,
           "setup_s": marks["setup_s"], "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "torch_threads": torch.get_num_threads(), "device": device}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def spawn(spec: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=REPO, capture_output=True,
                       text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
    if p.returncode != 0 or not lines:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"{spec['encoder']} {spec['mode']}: worker failed (exit {p.returncode})")
    return json.loads(lines[-1][len(MARK):])


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(MARK + json.dumps(worker(json.loads(sys.argv[2]))), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="synthetic clips to write and encode (default 8)")
    ap.add_argument("--batch-size", type=int, default=4, help="clips per encoder batch, both modes (default 4)")
    ap.add_argument("--shard-size", type=int, default=4, help="frames-stage shard size = zarr chunk (default 4)")
    ap.add_argument("--config", choices=("tiny", "full"), default="tiny",
                    help="tiny: the demo's seeded tiny models; full: paper-size models, random weights (GPU)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                    help="encoder device (default: cpu for tiny, auto for full; auto = cuda when available)")
    ap.add_argument("--half", action="store_true", help="fp16 encoders (CUDA only; TimeChat: the ViT in fp16)")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated subset (default all three)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed passes over the clips per mode, same process, best one counts (default 5)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0 = torch's default)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="project folder to use and keep (clips written only if absent); default a temp folder")
    args = ap.parse_args()
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if bad := [n for n in names if n not in ENCODERS]:
        ap.error(f"unknown encoders {bad}; choose from {list(ENCODERS)}")
    if min(args.clips, args.batch_size, args.shard_size, args.repeats) < 1:
        ap.error("--clips, --batch-size, --shard-size and --repeats must be >= 1")
    import torch

    from pipeline.demo_data import make_demo_clips
    from pipeline.encode import pick_device
    from v2a.runner import Runner

    device = args.device = pick_device(args.device or ("cpu" if args.config == "tiny" else "auto"))
    if args.half and not device.startswith("cuda"):
        ap.error(f"--half needs CUDA; the device is {device}")
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_encoders_")
        args.dir = Path(tmp.name)
    root = args.dir.resolve()
    t0 = time.perf_counter()
    if not (root / "videos" / "labels.csv").exists():
        make_demo_clips(root / "videos", n=args.clips, seed=0)
    Runner(load(root, args)).run(["frames"], progress=False)
    frames_mb = sum(p.stat().st_size for p in (root / "cache" / "frames").glob("*.tar")) / 2**20
    print(f"{args.clips} synthetic clips -> frames stage ({frames_mb:.1f} MiB of shards, shard size "
          f"{args.shard_size}) in {time.perf_counter() - t0:.1f} s; {root}")
    gpu = f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""
    print(f"config {args.config}, device {device}{gpu}, {'fp16' if args.half else 'fp32'}, batch {args.batch_size}, "
          f"torch threads {args.threads or torch.get_num_threads()}, {os.cpu_count()} CPUs; each mode in a fresh "
          f"subprocess, best of {args.repeats} passes")
    spec_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results = {}
    for name in names:
        for mode in ("stage", "bare"):
            results[name, mode] = spawn({"root": str(root), "encoder": name, "mode": mode, "threads": args.threads,
                                         "args": spec_args})
    cuda = device.startswith("cuda")
    head = f"  {'encoder':9s} {'mode':6s} {'clips/s':>9s} {'ms/clip':>9s} {'cpu clips/s':>12s} {'peak RSS':>10s}"
    print(head + (f" {'CUDA peak':>10s}" if cuda else "") + f" {'build+warm':>11s}  {'h for 200k clips':>16s}")
    total_h = {"stage": 0.0, "bare": 0.0}
    for name in names:
        for mode in ("stage", "bare"):
            r = results[name, mode]
            rate, cpu_rate = r["clips"] / r["wall_s"], r["clips"] / r["cpu_s"]
            h = TARGET_CLIPS / rate / 3600
            total_h[mode] += h
            line = (f"  {name:9s} {mode:6s} {rate:9.2f} {1e3 / rate:9.1f} {cpu_rate:12.2f} "
                    f"{r['maxrss_mb']:8.0f} MB")
            if cuda:
                line += f" {r['cuda_peak_mb']:7.0f} MB"
            print(line + f" {r['setup_s']:9.1f} s  {h:14.1f} h")
        s, b = results[name, "stage"], results[name, "bare"]
        note = f" ({b['encoded']} of {b['clips']} clips have usable audio)" if b["encoded"] != b["clips"] else ""
        ms = {k: 1e3 * v / s["clips"] for k, v in (("stage", s["wall_s"]), ("enc", s["encode_s"]),
                                                     ("bare", b["wall_s"]), ("dec", b["decode_s"]))}
        print(f"  {name:9s} stage/bare = {s['wall_s'] / b['wall_s']:.2f} wall, {s['cpu_s'] / b['cpu_s']:.2f} cpu; "
              f"peak RSS stage/bare = {s['maxrss_mb'] / b['maxrss_mb']:.2f}{note}")
        print(f"  {'':9s} in the stage: encode {ms['enc']:.1f} ms/clip (bare {ms['bare']:.1f}), the rest "
              f"{ms['stage'] - ms['enc']:.1f} ms/clip; shard read+decode alone (serial) {ms['dec']:.1f} ms/clip")
    print(f"  {' + '.join(names)} in sequence on this device: {total_h['stage']:.1f} h for {TARGET_CLIPS:,} clips "
          f"through the stages ({total_h['bare']:.1f} h of bare forward)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
