"""The training subset: class-stratified, seeded, independent of row order and of the other classes; id lists."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.subset import choose, read_id_list, stratified_subset


def _data(n_per_class=(10, 7, 3, 1), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[f"class{c}"] * n for c, n in enumerate(n_per_class)])
    ids = np.array([f"id{i:04d}" for i in rng.permutation(len(labels))])
    return ids, labels


def test_fraction_and_strata():
    ids, labels = _data()
    mask = stratified_subset(ids, labels, 0.4, seed=0)
    assert mask.sum() == round(0.4 * len(ids))  # 8 of 21
    for c in set(labels):
        n_c = int((labels == c).sum())
        assert abs(mask[labels == c].sum() - 0.4 * n_c) < 1  # floor or floor + 1 per class


def test_deterministic_seeded_and_order_free():
    ids, labels = _data()
    a = stratified_subset(ids, labels, 0.4, seed=0)
    assert (a == stratified_subset(ids, labels, 0.4, seed=0)).all()
    assert set(ids[a]) != set(ids[stratified_subset(ids, labels, 0.4, seed=1)])
    perm = np.random.default_rng(5).permutation(len(ids))  # the cache's row order does not matter
    assert set(ids[perm][stratified_subset(ids[perm], labels[perm], 0.4, seed=0)]) == set(ids[a])


def test_a_class_choice_ignores_the_other_classes():
    ids, labels = _data((10, 10))
    alone = ids[labels == "class0"]
    chosen = set(alone[stratified_subset(alone, np.array(["class0"] * 10), 0.4, seed=3)])
    both = stratified_subset(ids, labels, 0.4, seed=3)
    assert set(ids[both & (labels == "class0")]) == chosen


def test_whole_and_bad_fraction():
    ids, labels = _data()
    assert stratified_subset(ids, labels, 1.0, seed=0).all()
    with pytest.raises(ValueError, match="subset_fraction"):
        stratified_subset(ids, labels, 0.0, seed=0)


def test_id_list_file(tmp_path):
    ids, labels = _data()
    f = tmp_path / "visualsound.txt"
    f.write_text(f"# VisualSound-like list\n{ids[3]}\n\n{ids[0]}  # a comment\nnot-in-cache\n")
    assert read_id_list(f) == [ids[3], ids[0], "not-in-cache"]
    rows = np.arange(len(ids))
    kept, rest, how = choose(rows, ids, labels, fraction=1.0, seed=0, id_file=f)
    assert sorted(kept) == [0, 3] and len(rest) == len(ids) - 2 and "2 of 3 ids usable" in how
    assert "replaces subset_fraction 0.4" in choose(rows, ids, labels, fraction=0.4, seed=0, id_file=f)[2]
    f.write_text(f"{ids[0]}\n{ids[0]}\n")
    with pytest.raises(ValueError, match="more than once"):
        read_id_list(f)
