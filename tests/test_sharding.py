"""generate and evaluate split across ranks: the union of two ranks' outputs is the one-rank run, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.demo_data import make_demo_clips
from v2a.config import load_config
from v2a.runner import Runner

REPO = Path(__file__).resolve().parent.parent


def config(root: Path):
    sets = [f"paths.videos={root / 'videos'}", f"paths.labels={root / 'videos' / 'labels.csv'}",
            f"paths.cache={root / 'cache'}", f"paths.runs={root / 'runs'}", f"paths.outputs={root / 'out'}",
            "stages.frames.params.shard_size=4", "stages.train.params.epochs=2", "stages.train.params.global_batch=2",
            "stages.generate.params.steps=3", "stages.generate.params.split=train",  # more clips than 'test'
            "stages.generate.runtime.batch_size=2", "stages.evaluate.params.gallery_max_clips=3"]
    return load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"], sets)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted((root / "out").rglob("*")):
        if not p.is_file() or p.name.startswith(".lock"):
            continue
        data = p.read_bytes()
        if p.name in ("_stage.json", "metrics.json"):  # the record's finish time differs, nothing else
            rec = json.loads(data)
            rec.pop("finished_at")
            data = json.dumps(rec, sort_keys=True).encode()
        out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    make_demo_clips(root / "videos", n=8, seed=5)
    assert Runner(config(root)).run(["evaluate"], progress=False)[-2:] == ["generate", "evaluate"]
    return root, snapshot(root)


def test_two_ranks_give_the_one_rank_bytes(one_rank):
    root, want = one_rank
    n_clips = sum(1 for k in want if k.startswith("out/generated/") and k.endswith(".wav"))
    assert n_clips >= 4  # two batches of two at least: each rank has work
    shutil.rmtree(root / "out")
    r = Runner(config(root))
    assert r.run(["generate"], only=True, progress=False, rank=1, world_size=2) == ["generate"]
    gen = root / "out" / "generated"
    assert not (gen / "index.csv").exists() and not (gen / "_stage.json").exists()  # rank 0's clips missing
    fresh, why = Runner(config(root)).status("generate")
    assert not fresh and why[-1].endswith(f"/{n_clips} clips done") and not why[-1].startswith("0/")
    with pytest.raises(RuntimeError, match="needs generate, which is stale"):
        Runner(config(root)).run(["evaluate"], only=True, progress=False)
    assert Runner(config(root)).run(["generate"], only=True, progress=False, rank=0, world_size=2)
    assert Runner(config(root)).status("generate")[0]  # the last rank completed the stage
    for rank in (0, 1):
        Runner(config(root)).run(["evaluate"], only=True, progress=False, rank=rank, world_size=2)
        assert (root / "out" / "evaluation" / "metrics.json").exists() == (rank == 1)
    got = snapshot(root)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []


def test_evaluate_resumes_per_clip(one_rank):
    root, _ = one_rank
    ev = root / "out" / "evaluation"
    scores = sorted((ev / "clips").glob("*.npz"))
    before = {p.name: p.read_bytes() for p in scores}
    kept = scores[1].stat().st_mtime_ns
    scores[0].unlink()
    (ev / "metrics.json").unlink()
    assert Runner(config(root)).run(["evaluate"], only=True, progress=False) == ["evaluate"]
    assert scores[1].stat().st_mtime_ns == kept  # scored before: not recomputed
    assert {p.name: p.read_bytes() for p in sorted((ev / "clips").glob("*.npz"))} == before
    assert json.loads((ev / "metrics.json").read_text())["complete"] is True
