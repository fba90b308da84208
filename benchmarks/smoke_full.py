"""Full-size dry run on the CPU (`make smoke-full`): every model of stages.yaml at its released size with seeded
random weights (configs/smoke-full.yaml; nothing is downloaded), a couple of synthetic clips pushed through
frames -> cavp -> timechat -> audiomae -> train -> generate -> evaluate, each stage in its own `v2a stage` process.

Prints per stage the wall time and the peak resident memory of its process, then the dimensions found in what
the stages wrote (CAVP (40, 512), TimeChat (10, 32, 768), AudioMAE (8, 768), the mapper's GPT-2 width, the
generated audio). Exits 1 when a stage fails, a dimension is not the paper's, or a stage peaks above --max-gb.

    python benchmarks/smoke_full.py [--out build/smoke-full] [--clips 2] [--max-gb 24]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["frames", "cavp", "timechat", "audiomae", "train", "generate", "evaluate"]
WANT = {"cavp": (40, 512), "timechat": (10, 32, 768), "audiomae": (8, 768)}


def run_stage(cli: list[str], name: str, log: Path) -> tuple[int, float, float]:
    """(exit status, seconds, peak RSS in GB) of `v2a stage NAME` in a child process (os.wait4's rusage)."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cli + ["stage", name], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - t0, usage.ru_maxrss / 2**20  # ru_maxrss: KiB on Linux


def check_dims(cfg) -> list[str]:
    """Dimension lines (and problems, prefixed '!') from the cache, the mapper and the generated audio (the folders
    of the run-folder layout of ``cfg``, v2a/config.py)."""
    import soundfile as sf
    import zarr

    lines = []
    root = zarr.open_group(str(cfg.zarr_path), mode="r")
    for name, want in WANT.items():
        got = tuple(root[f"{name}/emb"].shape[1:])
        lines.append(f"{'' if got == want else '! '}{name}/emb per clip {got} (paper {want})")
    cfg_file = next(cfg.mapper_dir.rglob("config.json"), None)
    if cfg_file is not None:
        gcfg = json.loads(cfg_file.read_text())
        width = (gcfg.get("gpt2_config") or gcfg.get("spec", {}).get("gpt2_config") or {}).get("n_embd")
        lines.append(f"{'' if width == 768 else '! '}mapper GPT-2 width {width} (AudioLDM-2's 768)")
    wavs = sorted(cfg.generated_dir.glob("*.wav"))
    for w in wavs[:2]:
        info = sf.info(str(w))
        lines.append(f"generated {w.name}: {info.frames} samples at {info.samplerate} Hz ({info.duration:.2f} s)")
    if not wavs:
        lines.append("! no generated audio")
    metrics = cfg.evaluation_dir / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())["metrics"]
        lines.append("metrics: " + ", ".join(f"{k}={v.get('status')}" for k, v in m.items()))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "smoke-full")
    ap.add_argument("--clips", type=int, default=2, help="synthetic clips (split train, test, ...)")
    ap.add_argument("--max-gb", type=float, default=24.0, help="fail when a stage's peak RSS passes this")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated prefix of the chain to run")
    args = ap.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    sys.path.insert(0, str(REPO))
    from pipeline.demo_data import make_demo_clips

    make_demo_clips(out / "videos", n=args.clips, seed=0)
    sets = [f"paths.{k}={out / v}" for k, v in (("videos", "videos"), ("labels", "videos/labels.csv"),
                                                 ("cache", "cache"), ("runs", "runs"), ("outputs", "outputs"))]
    files = [REPO / "stages.yaml", REPO / "configs" / "smoke-full.yaml"]
    cli = [sys.executable, "-m", "lab.cli", "-c", str(files[0]), "-c", str(files[1]), "--no-progress"] + \
        [a for s in sets for a in ("--set", s)]
    print(f"{'stage':<10} {'seconds':>8} {'peak GB':>8}  log")
    failed, peak = None, 0.0
    for name in args.stages.split(","):
        rc, secs, gb = run_stage(cli, name, out / f"{name}.log")
        peak = max(peak, gb)
        print(f"{name:<10} {secs:8.1f} {gb:8.2f}  {out / f'{name}.log'}{'' if rc == 0 else f'  FAILED (exit {rc})'}",
              flush=True)
        if rc != 0:
            failed = name
            break
    if failed is None and args.stages == ",".join(STAGES):
        from v2a.config import load_config

        dims = check_dims(load_config(files, sets))
        print("\n".join(dims))
        failed = "dimensions" if any(d.startswith("!") for d in dims) else None
    print(f"peak RSS of any stage: {peak:.2f} GB (limit {args.max_gb:g} GB)")
    if peak > args.max_gb:
        failed = failed or "memory"
    if failed:
        print(f"smoke-full FAILED at {failed}; see the logs above", file=sys.stderr)
        return 1
    print("smoke-full passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
