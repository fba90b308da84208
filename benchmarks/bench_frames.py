"""The frames stage against the decode floor, on a mixed-codec folder, side by side in one run.

    .venv/bin/python benchmarks/bench_frames.py [--clips 42] [--workers 2] [--repeats 5] [--dir DIR] [--per-kind]
                                                [--stored jpeg,h264-medium,h264-veryfast]

The folder (benchmarks/mixed_clips.py: H.264/AAC 720p mp4, VP9/Opus webm, MPEG-4/MP3 avi, MPEG-2 without audio,
QCIF 29.97 fps, a 14 s mkv) is written once to ``--dir`` (default a temporary folder) and reused. Each round runs,
as fresh processes (start-up, imports and worker spawn included):

1. ``stage``: ``v2a stage frames --workers N`` into an empty cache (decode, convert the 40 kept frames, resample
   the audio, store the frames in each ``--stored`` form (JPEG strip, H.264 4:4:4 at an x264 preset, raw) and the
   float32 WAV, write the shards, ``rejects.csv`` and the zarr ``meta``);
2. ``decode-only``: this script with ``--decode-only-pass``: N threads over the clips, every video and audio
   packet of each clip's first 10 s decoded (one decoder thread each), nothing converted: the floor.

The two alternate (order flipped every round); the median over rounds and the spread (min-max) are printed for
wall time and for CPU time (user + system of the process and its children). Target: stage / decode-only wall
time <= 1.25 (stretch 1.10). ``--per-kind`` adds an in-process split of one clip of each kind: decode-only vs
``decode_clip`` vs the stored-form encoding (``encode_frames``, ``encode_audio``), to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from mixed_clips import KINDS, make_folder  # noqa: E402

VIDEO_EXTS = {".mp4", ".webm", ".avi", ".mpg", ".mkv"}


def decode_only(path: Path, seconds: float = 10.0, threads: int = 1) -> int:
    """Decode every video and audio packet of the first ``seconds``; nothing converted. Returns frames decoded."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        a_s = c.streams.audio[0] if c.streams.audio else None
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = threads
        n, v_done, a_done = 0, False, a_s is None
        for packet in c.demux([vs] + ([a_s] if a_s is not None else [])):
            if packet.stream is vs and not v_done:
                for f in packet.decode():
                    n += 1
                    v_done = v_done or (f.time is not None and f.time >= seconds)
            elif packet.stream is a_s and not a_done:
                for f in packet.decode():
                    a_done = a_done or (f.time is not None and f.time >= seconds)
            if v_done and a_done:
                break
        return n


def decode_only_pass(folder: Path, workers: int) -> None:
    clips = sorted(p for p in folder.iterdir() if p.suffix in VIDEO_EXTS)
    with ThreadPoolExecutor(workers) as pool:  # PyAV releases the GIL while decoding
        frames = sum(pool.map(decode_only, clips))
    print(f"decoded {frames} frames of {len(clips)} clips")


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def stage_cmd(folder: Path, cache: Path, workers: int, stored: str) -> list[str]:
    """``stored``: ``jpeg``, ``raw`` or ``h264-<x264 preset>``."""
    overlay = cache.parent / "bench_overlay.yaml"
    overlay.write_text(f"paths:\n  videos: {folder}\n  labels: null\n  cache: {cache}\n")
    codec, _, preset = stored.partition("-")
    sets = ["--set", f"stages.frames.params.codec={codec}"]
    if preset:
        sets += ["--set", f"stages.frames.params.preset={preset}"]
    return [sys.executable, "-m", "lab.cli", "-c", str(REPO / "stages.yaml"), "-c", str(overlay), "-q",
            "--no-progress", *sets, "stage", "frames", "--workers", str(workers)]


def per_kind(folder: Path, stored: list[str]) -> None:
    from pipeline.framestore import encode_audio, encode_frames
    from pipeline.media import decode_clip

    forms = [(st, *st.partition("-")[::2]) for st in stored]
    print("[per kind, one clip each, in-process, 1 thread, best of 3, CPU ms] decode-only | decode_clip | "
          + " | ".join(f"store[{st}]" for st, _, _ in forms) + " | encode_audio")
    for kind in KINDS:
        clip = next((p for p in sorted(folder.iterdir()) if p.name.startswith(kind.name + "_")), None)
        if clip is None:
            continue
        best = [float("inf")] * (3 + len(forms))
        for _ in range(3):
            t = [time.process_time()]
            decode_only(clip)
            t.append(time.process_time())
            d = decode_clip(clip, threads=1)
            t.append(time.process_time())
            for _, codec, preset in forms:
                encode_frames(d.frames[: d.n_frames], codec=codec, preset=preset or "medium")
                t.append(time.process_time())
            if d.audio_len:
                encode_audio(d.audio[: d.audio_len], 16_000)
            t.append(time.process_time())
            best = [min(b, (t[i + 1] - t[i]) * 1e3) for i, b in enumerate(best)]
        print(f"  {kind.name:13s} " + " | ".join(f"{b:7.1f}" for b in best))


def _summary(name: str, xs: list[float]) -> str:
    return f"{name:16s} median {statistics.median(xs):6.2f} s  (min {min(xs):6.2f}, max {max(xs):6.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=42)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="where to keep the generated clips (DIR/mixedN, reused if present)")
    ap.add_argument("--stored", default="jpeg,h264-medium",
                    help="stored forms of the frames to time, comma-separated: jpeg, raw, h264-<x264 preset>")
    ap.add_argument("--per-kind", action="store_true", help="also split the time per clip kind (in-process)")
    ap.add_argument("--decode-only-pass", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.decode_only_pass is not None:
        return decode_only_pass(args.decode_only_pass, args.workers)
    with tempfile.TemporaryDirectory(prefix="bench_frames_") as tmp:
        folder = (args.dir or Path(tmp)) / f"mixed{args.clips}"  # exactly --clips clips
        t0 = time.perf_counter()
        make_folder(folder, args.clips)
        print(f"{args.clips} clips ({', '.join(k.name for k in KINDS)}) in {folder}, ready in "
              f"{time.perf_counter() - t0:.1f} s; workers={args.workers}, {args.repeats} rounds, "
              f"{os.cpu_count()} CPUs")
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        floor_cmd = [sys.executable, str(Path(__file__).resolve()), "--decode-only-pass", str(folder),
                     "--workers", str(args.workers)]
        cache = Path(tmp) / "cache"
        stored = args.stored.split(",")
        runs = [(f"stage[{st}]", stage_cmd(folder, cache, args.workers, st)) for st in stored]
        runs.append(("decode-only", floor_cmd))
        wall: dict[str, list[float]] = {name: [] for name, _ in runs}
        per_clip: dict[str, dict] = {}
        cpu: dict[str, list[float]] = {name: [] for name, _ in runs}
        for r in range(args.repeats):
            for name, cmd in runs if r % 2 == 0 else runs[::-1]:
                shutil.rmtree(cache, ignore_errors=True)
                w, c = _timed(cmd, env)
                wall[name].append(w)
                cpu[name].append(c)
                if name.startswith("stage") and name not in per_clip:
                    per_clip[name] = json.loads((cache / "frames" / "_stage.json").read_text())["summary"]

        for what, d in (("wall", wall), ("cpu", cpu)):
            print(f"[{what} time, whole folder, processes included]")
            for name, xs in d.items():
                print("  " + _summary(name, xs))
            for name in [n for n in d if n.startswith("stage")]:
                ratios = [s / f for s, f in zip(d[name], d["decode-only"])]
                med = statistics.median(ratios)
                verdict = "stretch OK" if med <= 1.10 else "OK" if med <= 1.25 else "MISSED"
                print(f"  {name} / decode-only: median {med:.3f} (per round {min(ratios):.3f}-{max(ratios):.3f}; "
                      f"target <= 1.25, stretch 1.10: {verdict}); ratio of the median times "
                      f"{statistics.median(d[name]) / statistics.median(d['decode-only']):.3f}")
        print("[stored bytes per kept clip (frames + audio)]")
        for name, summary in per_clip.items():
            print(f"  {name:16s} {summary['bytes_per_clip'] / 1024:8.1f} KB")
        if args.per_kind:
            per_kind(folder, stored)


if __name__ == "__main__":
    main()
