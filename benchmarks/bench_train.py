"""Trainer throughput on CPU: samples/s, share of step time spent on data, and a per-sample zarr baseline.

    .venv/bin/python benchmarks/bench_train.py [--rows 512] [--full-steps 3] [--threads 1]

1. A synthetic cache with the real feature sizes (CAVP 40x512, TimeChat 2x32x768, AudioMAE 8x768).
2. The tiny mapper (n_embd 32 + target projection) trained one epoch with the in-memory loader: samples/s and the
   data share of step time (target < 5%).
3. Baseline measured in the same run: the same batches read per sample from zarr (and per batch from zarr);
   the ratio of data time per step, and the data share the per-sample loader would have had.
4. GPT-2 at AudioLDM-2's size (768 x 12, random weights) for a few steps.
Each line also says what 40 epochs over 77,000 clips would take at that rate on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.data import Features, open_cache, select_rows
from trainer.synthetic import write_synthetic_cache
from trainer.train import run

PAPER_SAMPLES = 40 * 77_000


def hours(samples_per_s: float) -> str:
    return f"{PAPER_SAMPLES / samples_per_s / 3600:.1f} h for 40 epochs x 77,000 clips"


def loader_time(root, rows, cfg, mode: str, batches: list[np.ndarray]) -> float:
    feats = Features(root, rows, cfg, mode=mode)
    t = time.perf_counter()
    for b in batches:
        feats.batch(b)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--full-steps", type=int, default=3, help="0 skips the full-size GPT-2 run")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1 on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "features.zarr"
        t = time.perf_counter()
        write_synthetic_cache(cache, n=args.rows, shard_size=64, cavp_dim=512, windows=2, queries=32, tc_dim=768,
                              target_dim=768, n_val=16, n_rejected=0, n_silent=0, task="half")
        print(f"cache: {args.rows} clips with real feature sizes written in {time.perf_counter() - t:.1f} s")

        # 1. tiny mapper, in-memory loader
        cfg = TrainConfig(model="tiny", n_embd=32, target_proj=True, epochs=1, global_batch=args.batch,
                          val_max_clips=16, in_memory="yes")
        s = run(cfg, cache=str(cache), out_dir=str(Path(tmp) / "tiny"), progress=False)
        tm = s["timing"]
        n_samples = s["steps"] * args.batch
        sps = n_samples / tm["steps_s"]
        print(f"tiny (n_embd 32, 2 layers), in-memory: {sps:.0f} samples/s, {tm['steps_s'] / s['steps'] * 1e3:.1f} "
              f"ms/step of {args.batch}, data share {100 * tm['data_share']:.2f}% -> {hours(sps)}")

        # 2. baseline loaders on the same batches
        root = open_cache(cache)
        train, _, _ = select_rows(cfg, root)
        perm = np.random.default_rng(0).permutation(len(train))
        batches = [perm[i: i + args.batch] for i in range(0, len(train) - args.batch + 1, args.batch)]
        t_mem = loader_time(root, train, cfg, "memory", batches)
        t_zarr = loader_time(root, train, cfg, "zarr", batches)
        t_ps = loader_time(root, train, cfg, "per_sample", batches)
        compute = (tm["steps_s"] - tm["data_s"]) / s["steps"] * len(batches)
        share_ps = t_ps / (compute + t_ps)
        print(f"data per step: in-memory {t_mem / len(batches) * 1e3:.2f} ms, zarr per batch "
              f"{t_zarr / len(batches) * 1e3:.1f} ms, zarr per sample {t_ps / len(batches) * 1e3:.1f} ms "
              f"(per-sample / in-memory = {t_ps / max(t_mem, 1e-9):.0f}x; per-sample data share would be "
              f"{100 * share_ps:.0f}%, {hours(len(batches) * args.batch / (compute + t_ps))})")

        # 3. GPT-2 at AudioLDM-2's size, random weights
        if args.full_steps:
            gb = 8
            cfg_full = TrainConfig(model="full", pretrained=False, epochs=1, global_batch=gb, val_max_clips=2,
                                   in_memory="yes")
            n = gb * args.full_steps + 16
            cache_full = Path(tmp) / "full.zarr"
            write_synthetic_cache(cache_full, n=n, shard_size=64, cavp_dim=512, windows=2, queries=32, tc_dim=768,
                                  target_dim=768, n_val=16, n_rejected=0, n_silent=0, task="half")
            s = run(cfg_full, cache=str(cache_full), out_dir=str(Path(tmp) / "full"), progress=False)
            tm = s["timing"]
            sps = s["steps"] * gb / tm["steps_s"]
            print(f"full GPT-2 size (768 x 12, random init), batch {gb}, {s['steps']} steps: {sps:.1f} samples/s, "
                  f"{tm['steps_s'] / s['steps']:.2f} s/step, data share {100 * tm['data_share']:.2f}% -> {hours(sps)} "
                  "on this CPU")


if __name__ == "__main__":
    main()
