"""The training subset: which training clips a run learns from (paper 4.1.1: 40% of VGGSound).

The paper trains on VisualSound, an ImageBind-filtered ~40% of VGGSound's training split (77k clips), and its Table 1
says "40% of the VGGSound dataset". Two ways to choose the clips, both recorded with the run (``train_ids.txt``):

- an id list (``paths.train_ids``, one clip id per line, ``#`` comments allowed), e.g. VisualSound's; it replaces
  ``subset_fraction``; ids not among the cache's usable training rows are counted and logged;
- ``subset_fraction`` < 1 (our rule where the paper is silent): **stratified by class**. Per label, the usable
  training clips are sorted by id and permuted with ``default_rng([seed, crc32(label)])``; each class gets
  ``floor(f * n_class)`` clips and the remaining ``round(f * N) - sum(floor)`` slots go to the classes with the
  largest remainders (ties: label order). The choice of a clip depends only on its own class's ids, the seed and
  the fraction: never on the cache's row order or on the other classes.

"Usable" = frames status ok and a valid (non-silent) AudioMAE target, so the fraction is of what can be trained on.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from v2a.io import InputError, check_clip_id

log = logging.getLogger(__name__)


def stratified_subset(ids: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over ``ids``: a class-stratified ``fraction`` of them (see the module docstring)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train params: subset_fraction={fraction} must be in (0, 1]")
    ids, labels = np.asarray(ids).astype(str), np.asarray(labels).astype(str)
    mask = np.zeros(len(ids), dtype=bool)
    if fraction == 1.0:
        mask[:] = True
        return mask
    classes = sorted(set(labels.tolist()))
    members = {c: np.flatnonzero(labels == c) for c in classes}
    exact = {c: fraction * len(members[c]) for c in classes}
    quota = {c: int(np.floor(exact[c])) for c in classes}
    left = int(round(fraction * len(ids))) - sum(quota.values())
    by_remainder = sorted(classes, key=lambda c: (-(exact[c] - quota[c]), c))
    for c in by_remainder[:max(0, left)]:
        quota[c] += 1
    for c in classes:
        rows = members[c][np.argsort(ids[members[c]], kind="stable")]  # class members by id
        perm = np.random.default_rng([seed, zlib.crc32(c.encode("utf-8"))]).permutation(len(rows))
        mask[rows[perm[: quota[c]]]] = True
    return mask


def read_id_list(path: str | Path) -> list[str]:
    """Clip ids from a text file: one per line (UTF-8, a BOM and CRLF are fine); blank lines and ``#`` comments
    ignored. A missing file, undecodable text, an id that is not a safe clip id or an id listed twice raises
    InputError naming the file, the line and the value."""
    from pipeline.inputs import read_text

    p = Path(path)
    if not p.is_file():
        raise InputError(f"paths.train_ids: {p} is not a file (one clip id per line)")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for line, text in enumerate(read_text(p, "paths.train_ids").splitlines(), 1):
        cid = text.split("#", 1)[0].strip()
        if not cid:
            continue
        try:
            check_clip_id(cid)
        except ValueError as err:
            raise InputError(f"paths.train_ids {p}:{line}: {err}") from None
        if cid in first_line:
            raise InputError(f"paths.train_ids {p}:{line}: id {cid!r} is listed more than once (first on line "
                             f"{first_line[cid]})")
        first_line[cid] = line
        ids.append(cid)
    if not ids:
        raise InputError(f"paths.train_ids: {p} lists no clip ids")
    return ids


def choose(train_rows: np.ndarray, ids: np.ndarray, labels: np.ndarray, *, fraction: float, seed: int,
           id_file: str | Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(kept rows, left-out rows, how): the subset of the usable training rows ``train_rows`` to train on."""
    train_rows = np.asarray(train_rows)
    row_ids, row_labels = np.asarray(ids)[train_rows].astype(str), np.asarray(labels)[train_rows].astype(str)
    if id_file is not None:
        wanted = read_id_list(id_file)
        keep = np.isin(row_ids, wanted)
        missing = len(set(wanted) - set(row_ids[keep].tolist()))
        if missing:
            log.warning("train subset: %d of the %d ids in %s are not usable training rows of the cache "
                        "(not extracted, rejected, silent or not in split 'train')", missing, len(wanted), id_file)
        how = f"id list {Path(id_file).name}: {int(keep.sum())} of {len(wanted)} ids usable"
        if fraction < 1.0:
            how += f" (the list replaces subset_fraction {fraction:g})"
    else:
        keep = stratified_subset(row_ids, row_labels, fraction, seed)
        how = (f"all {len(train_rows)} usable training rows" if fraction == 1.0 else
               f"{int(keep.sum())} of {len(train_rows)} usable training rows, stratified by label "
               f"(fraction {fraction:g}, seed {seed})")
    if not keep.any():
        raise ValueError(f"the training subset is empty ({how}): raise train.params.subset_fraction (1.0: every "
                         "usable training clip), list ids that are in the cache, or add training clips")
    return train_rows[keep], train_rows[~keep], how
