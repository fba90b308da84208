"""The frames stage end to end: shards, rejects, meta arrays, SIGKILL + resume byte equality, locks, ranks."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cache
from pipeline.demo_data import make_demo_clips, pack_webdataset
from pipeline.framestore import iter_shard, read_plan
from pipeline.media import decode_clip
from v2a.config import load_config
from v2a.io import LockedError, exclusive_lock
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    specs = make_demo_clips(d, n=7, seed=3)
    (d / "zz_random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "zz_empty.mkv").write_bytes(b"")
    good = Path(specs[0].path).read_bytes()
    (d / "zz_truncated.mp4").write_bytes(good[: len(good) // 3])
    (d / "notes.txt").write_text("not a video")  # skipped by extension
    return d, specs


def project(tmp: Path, videos: Path, **frames_params) -> Path:
    cfg = yaml.safe_load((REPO / "stages.yaml").read_text())
    labels = videos / "labels.csv"
    cfg["paths"] = {"videos": str(videos), "labels": str(labels) if labels.exists() else None, "cache": str(tmp / "cache"),
                    "runs": str(tmp / "runs"), "outputs": str(tmp / "out")}
    cfg["stages"] = {"frames": cfg["stages"]["frames"]}
    cfg["targets"] = {"extract": ["frames"]}  # the other stages are left out (targets may only name stages)
    cfg["stages"]["frames"]["params"].update({"shard_size": 3, **frames_params})
    tmp.mkdir(parents=True, exist_ok=True)
    p = tmp / "stages.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def tree_bytes(root: Path, skip=("_stage.json",)) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".lock")}


def test_frames_stage_outputs(clips, tmp_path):
    videos, specs = clips
    cfg_path = project(tmp_path, videos, max_reject_share=0.5)
    r = Runner(load_config([cfg_path]))
    assert r.run(["frames"]) == ["frames"]
    assert r.status("frames") == (True, [])
    out = tmp_path / "cache" / "frames"
    rejects = list(csv.DictReader(open(out / "rejects.csv")))
    assert {(x["id"], x["reason"]) for x in rejects} == {
        ("zz_random", "not_a_video"), ("zz_empty", "empty_file"), ("zz_truncated", "truncated")}
    plan = read_plan(out)
    assert plan["n_clips"] == 10 and plan["n_shards"] == 4
    meta = cache.read_meta(cache.open_store(tmp_path / "cache" / "features.zarr", "r"))
    by_id = {s.id: s for s in specs}
    assert list(meta["id"]) == sorted(list(by_id) + ["zz_empty", "zz_random", "zz_truncated"])
    for i, cid in enumerate(meta["id"]):
        if cid not in by_id:
            assert meta["status"][i] != ""
            continue
        s = by_id[cid]
        assert meta["status"][i] == ""
        assert meta["n_frames"][i] == min(40, int(round(s.duration * 4)))
        assert meta["has_audio"][i] == s.has_audio
        assert meta["label"][i] == s.label and meta["split"][i] == s.split
        want = min(160000, int(round(s.duration * 16000))) if s.has_audio else 0
        assert abs(int(meta["audio_len"][i]) - want) <= 1100  # AAC pads to whole 1024-sample frames


def test_stored_clip_matches_direct_decode(clips, tmp_path):
    videos, specs = clips
    cfg_path = project(tmp_path, videos, max_reject_share=0.5, codec="raw")
    Runner(load_config([cfg_path])).run(["frames"])
    out = tmp_path / "cache" / "frames"
    rec = next(iter_shard(out, 0))
    d = decode_clip(next(s.path for s in specs if s.id == rec.id))
    assert np.array_equal(rec.frames, d.frames)  # raw codec: lossless
    assert np.array_equal(rec.audio, d.audio)  # float32 WAV: bit for bit
    assert rec.frames.shape == (40, 224, 224, 3) and rec.audio.shape == (160000,)


@pytest.mark.parametrize("codec, member", [("jpeg", "frames.jpg"), ("h264", "frames.mkv")])
def test_lossy_frames_are_near_lossless(clips, tmp_path, codec, member):
    videos, specs = clips
    Runner(load_config([project(tmp_path, videos, max_reject_share=0.5, codec=codec)])).run(["frames"])
    rec = next(iter_shard(tmp_path / "cache" / "frames", 0))
    assert rec.meta["frames_ext"] == member.split(".")[1]
    d = decode_clip(next(s.path for s in specs if s.id == rec.id))
    err = np.abs(rec.frames.astype(int) - d.frames.astype(int))
    assert err.mean() < 1.5 and rec.frames.dtype == np.uint8
    with tarfile.open(tmp_path / "cache" / "frames" / "shard-000000.tar") as tar:
        assert f"{rec.id}.{member}" in tar.getnames()


def _cli(cfg_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "-q", "--no-progress", "-c", str(cfg_path), *args]


def test_sigkill_then_resume_gives_the_same_bytes(clips, tmp_path):
    videos, _ = clips
    ref = project(tmp_path / "ref", videos, max_reject_share=0.5, shard_size=1)
    subprocess.run(_cli(ref, "stage", "frames"), check=True, cwd=REPO)
    killed = project(tmp_path / "killed", videos, max_reject_share=0.5, shard_size=1)
    out = tmp_path / "killed" / "cache" / "frames"
    proc = subprocess.Popen(_cli(killed, "stage", "frames"), cwd=REPO)
    deadline = time.time() + 120
    while not (out / "shard-000002.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "_stage.json").exists()
    r = Runner(load_config([killed]))
    fresh, why = r.status("frames")
    assert not fresh and "shards done" in why[-1]
    subprocess.run(_cli(killed, "stage", "frames"), check=True, cwd=REPO)
    a, b = tree_bytes(tmp_path / "ref" / "cache"), tree_bytes(tmp_path / "killed" / "cache")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_second_run_on_same_output_is_refused(clips, tmp_path):
    videos, _ = clips
    r = Runner(load_config([project(tmp_path, videos)]))
    with exclusive_lock(tmp_path / "cache" / "frames" / ".lock.rank0"):
        with pytest.raises(LockedError, match="another process"):
            r.run(["frames"])


def test_ranks_split_shards_and_finish_the_same(clips, tmp_path):
    videos, _ = clips
    single = project(tmp_path / "one", videos, max_reject_share=0.5)
    Runner(load_config([single])).run(["frames"])
    split = project(tmp_path / "two", videos, max_reject_share=0.5)
    Runner(load_config([split])).run(["frames"], rank=1, world_size=2)
    out = tmp_path / "two" / "cache" / "frames"
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-000001.json", "shard-000003.json"]
    assert not (out / "_stage.json").exists()
    Runner(load_config([split])).run(["frames"], rank=0, world_size=2)
    assert (out / "_stage.json").exists()
    a, b = tree_bytes(tmp_path / "one" / "cache"), tree_bytes(tmp_path / "two" / "cache")
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []


def test_too_many_rejects_fails_but_keeps_shards(clips, tmp_path):
    videos, _ = clips
    r = Runner(load_config([project(tmp_path, videos, max_reject_share=0.1)]))
    with pytest.raises(RuntimeError, match=r"3 of 10 clips rejected .*max_reject_share"):
        r.run(["frames"])
    out = tmp_path / "cache" / "frames"
    assert len(list(out.glob("shard-*.tar"))) == 4 and not (out / "_stage.json").exists()
    assert (out / "rejects.csv").exists()


def test_webdataset_input_and_unsafe_keys(clips, tmp_path):
    _, specs = clips
    shards = tmp_path / "wds"
    pack_webdataset(specs[:4], shards, shard_size=2)
    import io
    import tarfile

    with tarfile.open(shards / "evil.tar", "w") as tar:
        data = Path(specs[0].path).read_bytes()
        info = tarfile.TarInfo("../evil.mp4")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cfg_path = project(tmp_path, shards, max_reject_share=0.5)
    Runner(load_config([cfg_path])).run(["frames"])
    meta = cache.read_meta(cache.open_store(tmp_path / "cache" / "features.zarr", "r"))
    ok = meta["status"] == ""
    assert sorted(meta["id"][ok]) == sorted(s.id for s in specs[:4])
    assert dict(zip(meta["id"][ok], meta["label"][ok])) == {s.id: s.label for s in specs[:4]}
    bad = [(i, s) for i, s in zip(meta["id"], meta["status"]) if s]
    assert len(bad) == 1 and bad[0][1].startswith("unsafe_id")


def _loud_surround_clip(path: Path, seconds: float = 10.5, rate: int = 44_100) -> np.ndarray:
    """A 32x32 H.264 video with 5.1 float PCM audio whose channels differ and whose peak is 1.5 (a loud clip, as
    AAC decoders give for clipped web video). Returns the exact source audio (6, n)."""
    import av

    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(5)
    audio = np.stack([0.9 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.3 * rng.standard_normal(n)
                      for c in range(6)]).astype(np.float32)  # (6, n)
    audio[0, rate:rate + 2000] *= 1.5 / np.abs(audio[0, rate:rate + 2000]).max()  # peak 1.5 on channel 0
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=4)
        vs.width = vs.height = 32
        vs.pix_fmt = "yuv420p"
        a_s = c.add_stream("pcm_f32le", rate=rate, layout="5.1")
        for i in range(int(seconds * 4)):
            img = np.full((32, 32, 3), (i * 6) % 255, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        for i in range(0, n, 4096):
            chunk = np.ascontiguousarray(audio[:, i:i + 4096].T).reshape(1, -1)  # packed (1, n * 6)
            fr = av.AudioFrame.from_ndarray(chunk, format="flt", layout="5.1")
            fr.sample_rate, fr.pts = rate, i
            for p in a_s.encode(fr):
                c.mux(p)
        for p in a_s.encode():
            c.mux(p)
    return audio


def test_loud_surround_44k_clip_is_stored_as_audioldm2_reads_it(tmp_path):
    """AudioLDM-2 (the AudioMAE targets, ``read_wav_file``): torchaudio.load -> functional.resample of the whole
    10.5 s stream to 16 kHz -> channel 0 -> the first 10 s, never clipped. The stored audio equals that formula
    (evaluated independently, output sample by output sample, the last ones included: they read the stream past
    10 s) and keeps the peak beyond full scale."""
    from audio_reference import windowed_sinc

    videos = tmp_path / "videos"
    videos.mkdir()
    src = _loud_surround_clip(videos / "loud.mkv")
    Runner(load_config([project(tmp_path / "p", videos, codec="raw")])).run(["frames"])
    rec = next(iter_shard(tmp_path / "p" / "cache" / "frames", 0))
    assert rec.meta["audio_len"] == 160_000 and rec.audio.shape == (160_000,) and rec.audio.dtype == np.float32
    x0 = src[0]  # the whole stream's channel 0 (10.5 s)
    js = np.r_[0:40, 15_990:16_100, 80_000:80_040, 159_960:160_000]  # edges, the loud burst, the middle
    want = windowed_sinc(x0, 44_100, 16_000, js)
    np.testing.assert_allclose(rec.audio[js], want, atol=1e-4, rtol=0)  # float32 kernel, as torchaudio's
    assert np.abs(rec.audio).max() > 1.4  # nothing clipped
    mixed = windowed_sinc(src.mean(0), 44_100, 16_000, js)
    cut_first = windowed_sinc(src[0, :441_000], 44_100, 16_000, js[-4:])  # 10 s at 44.1 kHz, then resampled
    assert np.abs(rec.audio[js[-4:]] - cut_first).max() > 1e-3  # the order matters at the end
    assert np.abs(rec.audio[js] - mixed).max() > 0.1  # channel 0, not a mixdown
    assert not rec.meta["audio_silent"]


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "buffered"])
def test_tar_runs_are_what_tarfile_writes(tmp_path, monkeypatch, kernel_copy):
    """The shard tar is assembled from per-clip runs (pipeline.frames.tar_member/tar_end); the same members written
    by the standard library's tarfile give the same bytes, and tarfile reads every member back."""
    import io

    from pipeline.frames import clip_members, commit_shard, tar_end, write_part

    if not kernel_copy:  # a filesystem without copy_file_range: the buffered fallback gives the same bytes
        def refuse(*a):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)

    samples = [("a", {"json": b"{}", "frames.jpg": b"\xff\xd8" + bytes(range(256)) * 3}),
               ("clip_\u00e9", {"audio.wav": b"RIFF" + b"\x01" * 1000, "json": b"[1]"}),
               ("empty", {"json": b""})]
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            for ext in sorted(members):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(members[ext]), 0, 0o444, "", ""
                tar.addfile(ti, io.BytesIO(members[ext]))
    body = b"".join(clip_members(k, m) for k, m in samples)
    assert body + tar_end(len(body)) == ref.getvalue()
    # parts written by workers and in-memory members give the same shard
    recs = [{"index": i, "id": k} for i, (k, _) in enumerate(samples)]
    commit_shard(tmp_path, 0, [(r, m) for r, (_, m) in zip(recs, samples)], "fp")
    direct = (tmp_path / "shard-000000.tar").read_bytes()
    parts = [write_part(tmp_path, 1, r, m) for r, (_, m) in zip(recs, samples)]
    commit_shard(tmp_path, 1, [(recs[0], parts[0]), ({"index": 9, "id": "rejected"}, None), (recs[1], parts[1]),
                               (recs[2], parts[2])], "fp")
    assert (tmp_path / "shard-000001.tar").read_bytes() == direct == ref.getvalue()
    assert not list(tmp_path.glob("*.part.tmp"))  # parts removed once the shard is committed
    with tarfile.open(tmp_path / "shard-000001.tar") as tar:
        assert tar.extractfile("a.frames.jpg").read() == samples[0][1]["frames.jpg"]


def test_a_rank_removes_only_its_own_stale_temporaries(tmp_path):
    from pipeline.frames import _stale_temps

    names = [".shard-000000.000000001.part.tmp", ".shard-000001.000000070.part.tmp", ".shard-000002.tar.ab12.tmp",
             ".shard-000003.json.cd34.tmp", ".plan.json.ef56.tmp"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "shard-000000.tar").write_bytes(b"done")  # never a temporary
    mine = lambda rank, world: sorted(p.name for p in _stale_temps(tmp_path, rank, world))  # noqa: E731
    assert mine(0, 1) == sorted(names)
    assert mine(0, 2) == [names[0], names[2]]  # shards 0 and 2; rank 1's parts and the shared plan are left
    assert mine(1, 2) == [names[1], names[3]]
