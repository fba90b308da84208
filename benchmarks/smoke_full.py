"""Full-size dry run on the CPU (`make smoke-full`; docs/full-size.md): every model of stages.yaml at its released
size with seeded random weights (configs/smoke-full.yaml; nothing is downloaded), three synthetic 10 s clips
(1 train, 2 test) pushed through frames -> cavp -> timechat -> audiomae -> train -> generate -> evaluate, each
stage in its own `v2a stage` process.

Prints per stage the wall time, CPU time and peak resident memory of its process, then what the stages wrote, read
through the project's own loaders: the cache's per-clip shapes (trainer.data.check_cache: CAVP (40, 512),
TimeChat (10, 32, 768), AudioMAE (8, 768)), the mapper (trainer.mapper.load_mapper: GPT-2 width 768, its input
and output sizes against the cache's), the generated audio (16 kHz, audio_seconds long) and every metric's status.
Exits 1 when a stage fails, a size is not the paper's or does not connect, a metric is not computed (IS needs
is_splits = 10 generated clips: with fewer it must be the only one skipped), or a stage peaks above --max-gb.

    python benchmarks/smoke_full.py [--out build/smoke-full] [--splits train,test,test] [--max-gb 24] [--tiny]
                                    [--from STAGE]   (resume: keep --out, run STAGE and the ones after it)

--tiny overlays configs/smoke-tiny.yaml (the demo's tiny models): the same chain and checks in CI time
(tests/test_smoke_full.py), without the paper's sizes.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
PAPER = {"cavp": (40, 512), "timechat": (10, 32, 768), "audiomae": (8, 768)}  # per clip
GPT2_WIDTH = 768  # AudioLDM-2's GPT-2
CLIP_SECONDS = 10.0  # DeSync needs >= 8 s of audio and the video; IB-score the video


def machine() -> str:
    """One line: cores, CPU model, memory, load average (the figures' context)."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor() or "?") if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GB RAM, load average {load} at start"


def run_stage(cli: list[str], name: str, log: Path) -> tuple[int, float, float, float]:
    """(exit status, wall seconds, CPU seconds, peak RSS in GB) of `v2a stage NAME` in a child process (os.wait4's
    rusage: user + system time, which a loaded machine inflates far less than the wall time)."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cli + ["stage", name], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                                     "TRANSFORMERS_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), time.time() - t0, cpu, usage.ru_maxrss / 2**20  # ru_maxrss: KiB


def last_error(log: Path) -> str:
    """The stage's one-line error (the CLI's ERROR line), else its last line."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if " ERROR " in ln or ln.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1]


def mark(ok: bool, line: str) -> str:
    return ("  " if ok else "! ") + line


def check_cache_and_mapper(cfg, full: bool) -> list[str]:
    """The cache's per-clip shapes (the trainer's own check) and the trained mapper (its own loader)."""
    from infer.generate import mapper_checkpoint
    from trainer.data import check_cache, open_cache
    from trainer.mapper import load_mapper

    found = check_cache(cfg.stage("train").settings, open_cache(cfg.zarr_path))
    lines = []
    for name in ("cavp", "timechat", "audiomae"):
        got = tuple(int(d) for d in found[name])
        lines.append(mark(not full or got == PAPER[name], f"{name}/emb per clip {got}"
                          + (f" (paper {PAPER[name]})" if full else "")))
    folder = mapper_checkpoint(cfg.mapper_dir, cfg.stage("generate").settings.mapper)
    spec = load_mapper(folder).spec
    conn = (spec.cavp_steps, spec.cavp_dim, spec.timechat_windows, spec.timechat_queries, spec.timechat_dim,
            spec.n_tokens, spec.target_dim) == (*found["cavp"], *found["timechat"], *found["audiomae"])
    lines.append(mark(conn, f"mapper {folder.name}/ reads CAVP ({spec.cavp_steps}, {spec.cavp_dim}), TimeChat "
                            f"({spec.timechat_windows}, {spec.timechat_queries}, {spec.timechat_dim}), writes "
                            f"({spec.n_tokens}, {spec.target_dim})" + ("" if conn else ": not the cache's sizes")))
    lines.append(mark(not full or spec.width == GPT2_WIDTH, f"mapper GPT-2 width {spec.width}, "
                      f"{spec.gpt2_config.get('n_layer')} layers" + (f" (AudioLDM-2's {GPT2_WIDTH})" if full else "")))
    return lines


def check_generated(cfg, n_want: int) -> list[str]:
    """Every clip of the generate split has a wav at 16 kHz, audio_seconds long (infer's index.csv)."""
    import soundfile as sf

    index = cfg.generated_dir / "index.csv"
    rows = list(csv.DictReader(index.open(newline="", encoding="utf-8"))) if index.exists() else []
    lines = [mark(len(rows) == n_want, f"generated {len(rows)} clips (split {cfg.stage('generate').settings.split!r}"
                                       f" holds {n_want})")]
    want = int(round(cfg.stage("generate").settings.audio_seconds * 16000))
    for r in rows:
        info = sf.info(str(cfg.generated_dir / r["wav"]))
        ok = info.samplerate == 16000 and info.frames == want
        lines.append(mark(ok, f"generated {r['wav']}: {info.frames} samples at {info.samplerate} Hz "
                              f"({info.duration:.2f} s){'' if ok else f', expected {want} at 16000 Hz'}"))
    return lines


def check_metrics(cfg, n_clips: int) -> list[str]:
    """Every metric computed ('ok'); IS may be skipped only when there are fewer clips than its splits."""
    from v2a.io import read_json

    path = cfg.evaluation_dir / "metrics.json"
    if not path.exists():
        return [mark(False, f"no {path}")]
    may_skip = {"is_panns"} if n_clips < cfg.stage("evaluate").settings.is_splits else set()
    lines = []
    for key, m in read_json(path)["metrics"].items():
        ok = m.get("status") == "ok" or (key in may_skip and m.get("status") == "skipped")
        value = f"{m['value']:.4g}" if m.get("value") is not None else m.get("reason")
        note = f" ({m['note']})" if m.get("note") else ""
        lines.append(mark(ok, f"{key}: {m.get('status')}, {value}{note}"))
    return lines


def config_args(out: Path, tiny: bool) -> tuple[list[str], list[str]]:
    """(config files, --set overrides): stages.yaml + the smoke overlay(s), every path under ``out``."""
    files = [REPO / "stages.yaml", REPO / "configs" / "smoke-full.yaml"]
    files += [REPO / "configs" / "smoke-tiny.yaml"] if tiny else []
    sets = [f"paths.{k}={out / v}" for k, v in (("videos", "videos"), ("labels", "videos/labels.csv"),
                                                 ("cache", "cache"), ("runs", "runs"), ("outputs", "outputs"))]
    return [str(f) for f in files], sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "smoke-full")
    ap.add_argument("--splits", default="train,test,test", help="one synthetic 10 s clip per entry, its split")
    ap.add_argument("--max-gb", type=float, default=24.0, help="fail when a stage's peak RSS passes this")
    ap.add_argument("--tiny", action="store_true", help="the demo's tiny models (configs/smoke-tiny.yaml)")
    ap.add_argument("--from", dest="start", choices=STAGES, default=STAGES[0],
                    help="keep --out and run from this stage on (the stages before it must be fresh there)")
    args = ap.parse_args()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if "train" not in splits or "test" not in splits:
        ap.error(f"--splits needs at least one train and one test clip, got {args.splits!r}")
    out = args.out.resolve()
    if args.start != STAGES[0] and not (out / "videos" / "labels.csv").exists():
        ap.error(f"--from {args.start} resumes a run in --out, but {out} holds none: run from frames first")
    sys.path.insert(0, str(REPO))
    from pipeline.demo_data import make_demo_clips
    from v2a.config import load_config

    if args.start == STAGES[0]:
        shutil.rmtree(out, ignore_errors=True)
        make_demo_clips(out / "videos", n=len(splits), seed=0, splits=splits, duration=CLIP_SECONDS)
    files, sets = config_args(out, args.tiny)
    cfg = load_config(files, sets)
    cli = [sys.executable, "-m", "lab.cli", "--no-progress"] + [a for f in files for a in ("-c", f)] \
        + [a for s in sets for a in ("--set", s)]
    print(f"machine: {machine()}")
    print(f"clips: {len(splits)} x {CLIP_SECONDS:g} s ({', '.join(splits)}); models: "
          f"{'tiny' if args.tiny else 'released sizes, random weights'}")
    print(f"{'stage':<10} {'seconds':>8} {'CPU s':>8} {'peak GB':>8}  log", flush=True)
    failed, peak = None, 0.0
    for name in STAGES[STAGES.index(args.start):]:
        log = out / f"{name}.log"
        rc, secs, cpu, gb = run_stage(cli, name, log)
        peak = max(peak, gb)
        print(f"{name:<10} {secs:8.1f} {cpu:8.1f} {gb:8.2f}  {log}", flush=True)
        if rc != 0:
            print(f"  FAILED (exit {rc}): {last_error(log)}")
            failed = name
            break
    if failed is None:
        n_test = splits.count(cfg.stage("generate").settings.split)
        checks = check_cache_and_mapper(cfg, full=not args.tiny) + check_generated(cfg, n_test) \
            + check_metrics(cfg, n_test)
        print("\n".join(checks))
        failed = "the checks marked '!'" if any(c.startswith("!") for c in checks) else None
    print(f"peak RSS of any stage: {peak:.2f} GB (limit {args.max_gb:g} GB)")
    if peak > args.max_gb:
        failed = failed or "memory"
    if failed:
        print(f"smoke-full FAILED at {failed}; logs in {out}", file=sys.stderr)
        return 1
    print("smoke-full passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
