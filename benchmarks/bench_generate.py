"""Seconds per clip: our generate path (T5 labels + mapper tokens -> AudioLDM-2) against a direct pipeline call.

The direct call is ``AudioLDM2Pipeline.__call__`` given precomputed embeddings (what ours does minus preparing
them), in the same process, alternating the two after one warm-up round. Prints the median and the minimum of
``--repeats`` rounds (on a shared machine the minimum is the steadier figure) and the time of preparing the
embeddings alone, which is all that ours adds. On CPU the clock is the process CPU time (``--threads 1``), which
other jobs on a shared machine barely disturb; ``--wall`` switches to wall-clock; on CUDA it is wall-clock.

    .venv/bin/python benchmarks/bench_generate.py                       # tiny, CPU
    .venv/bin/python benchmarks/bench_generate.py --model full --checkpoint cvssp/audioldm2 --device cuda --half
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from infer.audioldm2 import generated_stream_width, build_pipeline, conditioning, generate_audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--checkpoint", default="cvssp/audioldm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wall", action="store_true", help="wall-clock on CPU too (default there: process CPU time)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = build_pipeline({"model": args.model, "checkpoint": args.checkpoint, "half": args.half}, args.device)
    pipe.set_progress_bar_config(disable=True)
    tokens = torch.randn(args.clips, 8, generated_stream_width(pipe), generator=torch.Generator().manual_seed(0))
    labels = (["dog bow-wow", None] * args.clips)[: args.clips]
    seeds = list(range(args.clips))
    common = dict(num_inference_steps=args.steps, guidance_scale=3.5, audio_length_in_s=args.seconds, eta=0.0)

    def ours():
        return generate_audio(pipe, tokens, labels, seed=seeds, steps=args.steps, audio_seconds=args.seconds)

    cond = conditioning(pipe, tokens, labels)

    def direct():
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return pipe(prompt=None, generator=gens, output_type="np", **common, **cond).audios

    cuda = args.device.startswith("cuda")
    clock = time.perf_counter if cuda or args.wall else time.process_time

    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return (clock() - t0) / args.clips

    ours(), direct()  # warm-up
    t_ours, t_direct = [], []
    for i in range(args.repeats):
        for fn, acc in ((ours, t_ours), (direct, t_direct)) if i % 2 == 0 else ((direct, t_direct), (ours, t_ours)):
            acc.append(timed(fn))
    t_cond = []
    for _ in range(max(args.repeats, 5)):
        t_cond.append(timed(lambda: conditioning(pipe, tokens, labels)))
    m_ours, m_direct = statistics.median(t_ours), statistics.median(t_direct)
    print(f"model={args.model} device={args.device} clips={args.clips} steps={args.steps} seconds={args.seconds} "
          f"threads={args.threads} repeats={args.repeats} clock={clock.__name__}")
    print(f"ours:   {m_ours:.4f} s/clip  (runs {', '.join(f'{t:.4f}' for t in t_ours)})")
    print(f"direct: {m_direct:.4f} s/clip  (runs {', '.join(f'{t:.4f}' for t in t_direct)})")
    print(f"ratio ours/direct: median {m_ours / m_direct:.4f}, min {min(t_ours) / min(t_direct):.4f}")
    print(f"embedding preparation alone: {statistics.median(t_cond) * 1000:.2f} ms/clip "
          f"({100 * statistics.median(t_cond) / m_direct:.2f}% of the direct call)")


if __name__ == "__main__":
    main()
