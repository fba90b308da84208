import numpy as np
import pytest
import torch
import zarr

from trainer.config import TrainConfig
from trainer.data import CacheError, Features, check_cache, expected_inputs, open_cache, select_rows
from trainer.synthetic import write_synthetic_cache

TINY = TrainConfig(model="tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "features.zarr"
    info = write_synthetic_cache(path, n=40, shard_size=8, n_val=8)
    return path, info


def edited(tmp_path, edit):
    path = tmp_path / "c.zarr"
    write_synthetic_cache(path, n=16, shard_size=8, n_val=4)
    edit(zarr.open_group(str(path), mode="a"))
    return open_cache(path)


def test_check_passes_and_reports_dims(cache):
    found = check_cache(TINY, open_cache(cache[0]), {"cavp": "synthetic-cavp-0"})
    assert (found["cavp_steps"], found["cavp_dim"], found["timechat_windows"], found["timechat_queries"],
            found["timechat_dim"], found["n_tokens"], found["target_dim"]) == (40, 16, 2, 4, 24, 8, 32)
    assert found["fingerprints"]["audiomae"] == "synthetic-audiomae-0"
    assert set(expected_inputs(TINY)) >= {"cavp/emb", "timechat/emb", "audiomae/emb", "audiomae/valid"}
    assert "timechat/emb" not in expected_inputs(TrainConfig(encoders="cavp"))


@pytest.mark.parametrize("edit,cfg,match", [
    (lambda r: r["timechat"].attrs.update({"complete": False}), TINY, "timechat is incomplete"),
    (lambda r: r["cavp"]["done"].__setitem__(1, 0), TINY, "some shards are not done"),
    (lambda r: r["cavp"].attrs.update({"dims": [40, 512]}), TINY, "attribute dims"),
    (lambda r: None, TrainConfig(model="tiny", cavp_dim=512), r"expects \[40, 512\]"),
    (lambda r: None, TrainConfig(model="tiny", audiomae_dim=768), "rerun audiomae"),
    (lambda r: r.__delitem__("timechat"), TINY, "timechat/emb is missing"),
    (lambda r: r["audiomae"].__delitem__("valid"), TINY, "audiomae/valid is missing"),
])
def test_refuses_unusable_cache(tmp_path, edit, cfg, match):
    root = edited(tmp_path, edit)
    with pytest.raises(CacheError, match=match):
        check_cache(cfg, root)


def test_missing_timechat_is_fine_for_cavp_only(tmp_path):
    root = edited(tmp_path, lambda r: r.__delitem__("timechat"))
    assert check_cache(TrainConfig(model="tiny", encoders="cavp"), root)["timechat_dim"] == 0


def test_refuses_stale_fingerprint(cache):
    with pytest.raises(CacheError, match="cavp is stale"):
        check_cache(TINY, open_cache(cache[0]), {"cavp": "something-newer"})


def test_row_selection(cache):
    path, info = cache
    root = open_cache(path)
    train, val, how = select_rows(TINY, root)
    ok = (info["status"] == "") & info["valid"]
    assert set(train) == set(np.flatnonzero(ok & (info["split"] == "train")))
    assert set(val) == set(np.flatnonzero(ok & (info["split"] == "val")))
    assert how == "split == 'val'"


def test_held_out_fraction_when_no_val_rows(tmp_path):
    root = edited(tmp_path, lambda r: r["meta"]["split"].__setitem__(slice(None), np.array(["train"] * 16, dtype=object)))
    cfg = TrainConfig(model="tiny", val_fraction=0.25, seed=3)
    train, val, how = select_rows(cfg, root)
    assert len(val) > 0 and not set(train) & set(val) and "held out" in how
    train2, val2, _ = select_rows(cfg, root)
    assert list(val2) == list(val)  # seeded
    assert len(select_rows(TrainConfig(model="tiny", val_fraction=0.0), root)[1]) == 0


def test_in_memory_zarr_and_per_sample_reads_agree(cache):
    path, _ = cache
    root = open_cache(path)
    train, _, _ = select_rows(TINY, root)
    pos = np.array([5, 0, 3, 11])
    got = [Features(root, train, TINY, mode=m).batch(pos) for m in ("memory", "zarr", "per_sample")]
    for other in got[1:]:
        for a, b in zip(got[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    cavp, tc, tgt = got[0]
    assert cavp.shape == (4, 40, 16) and tc.shape == (4, 2, 24) and tgt.shape == (4, 8, 32)
    raw = root["audiomae"]["emb"][int(train[5])]
    torch.testing.assert_close(tgt[0], torch.from_numpy(raw).float())
    mean = Features(root, train, TINY, mode="memory").mean_target()
    want = root["audiomae"]["emb"][:][train].astype(np.float64).mean(0)
    torch.testing.assert_close(mean, torch.from_numpy(want).float(), atol=1e-5, rtol=1e-5)


def test_window_upsample_reads_the_stride(tmp_path):
    root = edited(tmp_path, lambda r: r["timechat"].attrs.update({"params": {"window": 32, "stride": 32}}))
    assert check_cache(TrainConfig(model="tiny", upsample="window"), root)["timechat_stride"] == 32
    root2 = edited(tmp_path / "b", lambda r: None)
    with pytest.raises(CacheError, match="stride"):
        check_cache(TrainConfig(model="tiny", upsample="window"), root2)
    assert check_cache(TrainConfig(model="tiny", upsample="window", timechat_stride=4), root2)["timechat_stride"] == 4


def all_train(n: int, **kw):
    """A synthetic cache of ``n`` usable clips, every one in split 'train' (no 'val' clip)."""
    return dict(n=n, shard_size=4, n_val=0, n_rejected=0, n_silent=0, **kw)


def test_no_validation_rows_is_a_logged_skip(tmp_path, caplog):
    write_synthetic_cache(tmp_path / "c.zarr", **all_train(6))
    root = open_cache(tmp_path / "c.zarr")
    with caplog.at_level("WARNING", logger="trainer.data"):
        train, val, how = select_rows(TrainConfig(model="tiny", val_fraction=0.0), root)
    assert list(train) == list(range(6)) and len(val) == 0
    assert "none" in how and "validation skipped" in how and "val_fraction 0" in how
    assert len(caplog.records) == 1 and "validation skipped" in caplog.records[0].getMessage()
    # one training row: nothing to hold out, whatever val_fraction says
    write_synthetic_cache(tmp_path / "one.zarr", **all_train(1))
    root1 = open_cache(tmp_path / "one.zarr")
    train, val, how = select_rows(TrainConfig(model="tiny", val_fraction=0.25), root1)
    assert list(train) == [0] and len(val) == 0 and "but 1 row to hold out of" in how


@pytest.mark.parametrize("mode", ["memory", "zarr", "per_sample"])
def test_features_of_no_rows_are_empty_batches(cache, mode):
    root = open_cache(cache[0])
    empty = Features(root, np.zeros(0, dtype=np.int64), TINY, mode=mode)
    assert len(empty) == 0
    if mode == "memory":  # loaded once: (0, ...) tensors with the per-clip shapes (TimeChat pooled per window)
        assert tuple(empty.mem["cavp"].shape) == (0, 40, 16) and tuple(empty.mem["timechat"].shape) == (0, 2, 24)
        assert tuple(empty.mem["audiomae"].shape) == (0, 8, 32)
        assert empty.mem["cavp"].dtype == torch.float16  # the cache's dtype, as for selected rows


def test_no_training_rows_names_the_splits_found(tmp_path):
    root = edited(tmp_path, lambda r: r["meta"]["split"].__setitem__(slice(None), np.array(["test"] * 12 + ["val"] * 4,
                                                                                            dtype=object)))
    status, split = ([str(v) for v in root["meta"][k][:]] for k in ("status", "split"))
    ok = (np.array(status) == "") & np.asarray(root["audiomae"]["valid"][:]).astype(bool)
    split = np.array(split)
    want = f"usable per split: test {int((ok & (split == 'test')).sum())}, val {int((ok & (split == 'val')).sum())}"
    with pytest.raises(CacheError, match=want) as e:
        select_rows(TINY, root)
    assert "\n" not in str(e.value)


def test_empty_training_subset_says_what_to_change(tmp_path):
    write_synthetic_cache(tmp_path / "c.zarr", **all_train(1))
    with pytest.raises(ValueError, match=r"subset is empty \(0 of 1 usable.*raise train.params.subset_fraction"):
        select_rows(TrainConfig(model="tiny", subset_fraction=0.4), open_cache(tmp_path / "c.zarr"))


def test_training_without_validation_writes_last_only(tmp_path):
    from infer.generate import mapper_checkpoint
    from trainer import train

    write_synthetic_cache(tmp_path / "c.zarr", **all_train(4, cavp_dim=8, tc_dim=8, target_dim=16))
    cfg = TrainConfig(model="tiny", val_fraction=0.0, epochs=2, global_batch=2, device="cpu", compile="off")
    summary = train.run(cfg, cache=str(tmp_path / "c.zarr"), out_dir=str(tmp_path / "run"), progress=False)
    assert (summary["train_rows"], summary["val_rows"], summary["epochs_done"], summary["steps"]) == (4, 0, 2, 4)
    assert summary["best_dir"] is None and "validation skipped" in summary["val_from"]
    assert "val_loss" not in summary["final"] and np.isfinite(summary["final"]["train_loss"])
    assert not (tmp_path / "run" / "best").exists()
    assert (tmp_path / "run" / "val_ids.txt").read_text() == ""
    assert mapper_checkpoint(tmp_path / "run", "best") == tmp_path / "run" / "last"  # what generate then loads
