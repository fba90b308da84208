"""Frames no target shows are left undecoded, and the decoded clip is exactly the same as with every frame decoded."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest

from pipeline.frameskip import SkipPlanner
from pipeline.media import decode_clip


def _bframe_clip(path, seconds=3.0, fps=25, w=96, h=64, bframes=3):
    """H.264 with B-frames (b-pyramid: some are non-reference) over a moving pattern, plus a mono AAC track."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, size=(h, 2 * w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "medium", "bframes": str(bframes), "threads": "1"}
        a = c.add_stream("aac", rate=16000, layout="mono")
        for k in range(int(seconds * fps)):
            img = np.ascontiguousarray(np.roll(tex, 3 * k, axis=1)[:, :w])
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        wave = (0.2 * np.sin(np.arange(int(seconds * 16000)) * 0.1)).astype(np.float32)[None]
        fr = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for p in [*a.encode(fr), *a.encode()]:
            c.mux(p)
    return path


class _Pkt(SimpleNamespace):
    pass


def _planner(times, targets, depth=4):
    stream = SimpleNamespace(time_base=Fraction(1, 100), start_time=0)
    plan = SkipPlanner(stream, targets, depth=depth)
    pkts = [_Pkt(stream=stream, pts=int(round(t * 100))) for t in times]
    return plan, pkts


def test_planner_marks_exactly_the_frames_no_target_shows():
    # 10 fps frames in decode order with reordering; targets every 0.25 s
    times = [0.0, 0.3, 0.1, 0.2, 0.6, 0.4, 0.5, 0.9, 0.7, 0.8, 1.0]
    targets = [0.0, 0.25, 0.5, 0.75]
    plan, pkts = _planner(times, targets)
    marked = {round(p.pts / 100, 2) for p in plan.packets(pkts) if plan.unneeded(p)}
    # shown: 0.0 (t0), 0.2 (t0.25), 0.5 (t0.5), 0.7 (t0.75); 0.9 and 1.0 lie after the last target (kept)
    # independent check: a frame is unneeded iff another frame lies in (t, first target >= t]
    expect = {t for t in times if t <= targets[-1] and any(t < q <= min(x for x in targets if x >= t) for q in times)}
    assert marked == expect == {0.1, 0.3, 0.4, 0.6}


def test_planner_keeps_the_first_frame_and_packets_without_pts():
    plan, pkts = _planner([0.5, 0.6, 0.55], [0.0, 0.25, 0.5, 0.75])
    stream = pkts[0].stream
    pkts.insert(1, _Pkt(stream=stream, pts=None))
    marked = [p.pts for p in plan.packets(pkts) if plan.unneeded(p)]
    assert marked == [55]  # 0.5 is the first frame (targets 0 and 0.25 show it); 0.55 is hidden by 0.6


def test_planner_yields_every_packet_once_in_order():
    plan, pkts = _planner([i / 10 for i in range(30)], [i / 4 for i in range(8)], depth=5)
    other = SimpleNamespace()
    mixed = [x for p in pkts for x in (p, _Pkt(stream=other, pts=p.pts))]
    out = list(plan.packets(mixed))
    assert sorted(map(id, out)) == sorted(map(id, mixed))  # every packet once
    assert [p for p in out if p.stream is not other] == pkts  # the video in its order...
    assert [p for p in out if p.stream is other] == [p for p in mixed if p.stream is other]  # ...and the rest
    # a video packet comes out once 5 more video packets are known; the others pass straight through
    assert out[:7] == [mixed[1], mixed[3], mixed[5], mixed[7], mixed[9], pkts[0], mixed[11]]


@pytest.mark.parametrize("threads", [1, 0])
def test_skipping_gives_the_same_clip(tmp_path, threads):
    path = _bframe_clip(tmp_path / "b.mp4")
    with av.open(str(path)) as c:  # the fixture really has non-reference frames to skip
        vs = c.streams.video[0]
        vs.codec_context.skip_frame = "NONREF"
        assert sum(1 for _ in c.decode(vs)) < 75
    full = decode_clip(path, fps=4, seconds=10.0, size=32, threads=threads, skip_unneeded=False)
    fast = decode_clip(path, fps=4, seconds=10.0, size=32, threads=threads, skip_unneeded=True)
    assert full.n_frames == fast.n_frames == 12
    assert np.array_equal(full.frames, fast.frames)
    assert full.frame_times == fast.frame_times == [(25 * i // 4) / 25 for i in range(12)]
    assert np.array_equal(full.audio, fast.audio) and full.duration == fast.duration
