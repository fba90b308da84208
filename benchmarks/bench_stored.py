"""How each stored form of the frames trades size, error and encoding time, on demo clips and mixed-codec clips.

    .venv/bin/python benchmarks/bench_stored.py [--clips 6] [--dir DIR]

Decodes ``--clips`` demo clips (pipeline/demo_data.py: smooth synthetic scenes) and as many clips of
benchmarks/mixed_clips.py (noisy synthetic video, the worst case for every codec) with ``decode_clip``, stores their
40 frames with ``pipeline.framestore.encode_frames`` in each form, decodes them back and prints, per form and
folder, the mean stored size (KB), the mean absolute error against the decoded frames (grey levels), and the CPU
time to encode and to decode one clip (ms, one thread). The README's "Cache layout" table comes from this script.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from mixed_clips import make_folder  # noqa: E402

from pipeline.demo_data import make_demo_clips  # noqa: E402
from pipeline.framestore import decode_frames, encode_frames  # noqa: E402
from pipeline.media import decode_clip  # noqa: E402

FORMS = [("jpeg q95 (default)", dict(codec="jpeg", quality=95)), ("jpeg q90", dict(codec="jpeg", quality=90)),
         ("h264 medium", dict(codec="h264", preset="medium")), ("h264 veryfast", dict(codec="h264", preset="veryfast")),
         ("raw", dict(codec="raw"))]


def measure(paths: list[Path]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {name: [] for name, _ in FORMS}
    for p in paths:
        d = decode_clip(p, threads=1)
        frames = d.frames[: d.n_frames]
        for name, kw in FORMS:
            t0 = time.process_time()
            data, ext = encode_frames(frames, **kw)
            t1 = time.process_time()
            back = decode_frames(data, ext)
            t2 = time.process_time()
            err = float(np.abs(back.astype(np.int16) - frames.astype(np.int16)).mean())
            out[name].append((len(data) / 1024, err, (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    return {name: np.mean(v, axis=0) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--dir", type=Path, default=None, help="where to keep the generated clips (reused if present)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_stored_") as tmp:
        root = args.dir or Path(tmp)
        demo = root / f"demo{args.clips}"
        demo.mkdir(parents=True, exist_ok=True)
        demo_paths = [Path(s.path) for s in make_demo_clips(demo, n=args.clips, seed=1)]
        mixed_paths = make_folder(root / f"mixed{args.clips}", args.clips)  # one of each kind for 6
        for folder, paths in (("demo clips", demo_paths), ("mixed-codec clips (noisy)", mixed_paths)):
            print(f"[{folder}: {len(paths)} clips] form | KB per clip | mean abs error | encode ms | decode ms")
            for name, (kb, err, enc, dec) in measure(paths).items():
                print(f"  {name:20s} {kb:8.0f} {err:8.2f} {enc:8.1f} {dec:8.1f}")


if __name__ == "__main__":
    main()
