"""Seconds per clip: our generate path against a direct pipeline call, and the speed options against DDIM-100.

The direct call is ``AudioLDM2Pipeline.__call__`` given precomputed embeddings (what ours does minus preparing
them), in the same process, alternating the two after one warm-up round. Prints the median and the minimum of
``--repeats`` rounds (on a shared machine the minimum is the steadier figure) and the time of preparing the
embeddings alone, which is all that ours adds. On CPU the clock is the process CPU time (``--threads 1``), which
other jobs on a shared machine barely disturb; ``--wall`` switches to wall-clock; on CUDA it is wall-clock.

Then, in the same run, the speed options through our path, each against the paper's DDIM with 100 steps:
``--configs`` (scheduler:steps, default ``dpm++:25,dpm++:15``; DPM-Solver++ 2M, README speed section); the UNet
calls per generation and the batch they see (classifier-free guidance: one call on 2 x clips per step, as
diffusers' AudioLDM2Pipeline does); and ``--clips`` clips in one call against one call per clip.

    .venv/bin/python benchmarks/bench_generate.py                       # tiny, CPU
    .venv/bin/python benchmarks/bench_generate.py --model full --checkpoint cvssp/audioldm2 --device cuda --half
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from infer.audioldm2 import build_pipeline, conditioning, generate_audio, generated_stream_width, set_scheduler


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
    ap.add_argument("--configs", default="dpm++:25,dpm++:15", help="scheduler:steps to time against ddim:100")
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
    speed_options(args, pipe, tokens, labels, seeds, timed)


def speed_options(args, pipe, tokens, labels, seeds, timed) -> None:
    """Schedulers against DDIM-100, UNet calls per generation (CFG batching), clips batched vs one at a time."""
    def run(scheduler: str, steps: int, sl=slice(None)):
        set_scheduler(pipe, scheduler)
        return generate_audio(pipe, tokens[sl], labels[sl], seed=seeds[sl], steps=steps, audio_seconds=args.seconds)

    configs = [("ddim", 100)] + [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",") if c]
    times = {c: [] for c in configs}
    for c in configs:
        run(*c)  # warm-up
    for i in range(args.repeats):
        for c in configs if i % 2 == 0 else configs[::-1]:
            times[c].append(timed(lambda: run(*c)))
    base = statistics.median(times[("ddim", 100)])
    print("speed options (our path, s/clip, median; speed-up against the paper's DDIM-100):")
    for (name, steps), ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:5s} {steps:3d} steps: {m:.4f} s/clip  x{base / m:.2f}{'  (paper)' if steps == 100 else ''}")
    calls = []
    hook = pipe.unet.register_forward_hook(lambda mod, a, kw, out: calls.append(kw.get("sample", a[0] if a else
                                                                                    None).shape[0]), with_kwargs=True)
    run("ddim", 10)
    hook.remove()
    print(f"  CFG: {len(calls)} UNet calls for 10 steps, each on a batch of {calls[0]} = 2 x {len(seeds)} clips "
          "(negative and positive in one call)")
    one = statistics.median([timed(lambda: [run("ddim", args.steps, slice(k, k + 1)) for k in range(len(seeds))])
                             for _ in range(args.repeats)])
    batched = statistics.median([timed(lambda: run("ddim", args.steps)) for _ in range(args.repeats)])
    print(f"  clips batched: {len(seeds)} clips in one call {batched:.4f} s/clip, one call per clip {one:.4f} s/clip "
          f"(x{one / batched:.2f})")
    set_scheduler(pipe, "ddim")


if __name__ == "__main__":
    main()
