"""The feature cache: one zarr v3 store (layout in docs/CONTRACTS.md and the README).

``meta/*`` arrays are written by the frames stage; each encoder owns one group (``cavp``, ``timechat``,
``audiomae``) with its ``emb`` array, a per-shard ``done`` array (chunk 1, so workers never share a chunk) and
attributes naming the encoder, its config, checkpoint identity, dims and the stage fingerprint. Chunks along
the clip axis equal the frames stage's shard size, so shard k is exactly chunk k.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import zarr

log = logging.getLogger(__name__)

META_FIELDS = {
    "id": str, "label": str, "split": str, "status": str, "source": str,
    "n_frames": np.int32, "audio_len": np.int32, "has_audio": bool, "audio_silent": bool,
    "duration": np.float32, "native_fps": np.float32,
}


def open_store(path: Path, mode: str = "a") -> zarr.Group:
    if mode == "r" and not Path(path).exists():
        raise RuntimeError(f"feature cache {path} does not exist: run `make extract` first")
    return zarr.open_group(str(path), mode=mode)


def write_meta(path: Path, records: list[dict], *, shard_size: int, fingerprint: str) -> None:
    """(Re)write the ``meta`` group from the frames stage's per-clip records (row order = index)."""
    root = open_store(path, "a")
    if "meta" in root:
        del root["meta"]
    meta = root.create_group("meta")
    n = len(records)
    assert [r["index"] for r in records] == list(range(n)), "records must be in row order"
    for name, dtype in META_FIELDS.items():
        values = np.array([r[name] for r in records], dtype=dtype) if dtype is not str else \
            np.array([str(r[name]) for r in records], dtype=object)
        arr = meta.create_array(name, shape=(n,), dtype=dtype, chunks=(max(1, min(shard_size, n)),))
        if n:
            arr[:] = values
    meta.attrs.update({"n_clips": n, "shard_size": shard_size, "fingerprint": fingerprint,
                       "note": "rows with status != '' were rejected by the frames stage"})


def read_meta(root: zarr.Group) -> dict[str, np.ndarray]:
    if "meta" not in root:
        raise RuntimeError("the feature cache has no meta group: run the frames stage first")
    return {name: root["meta"][name][:] for name in META_FIELDS}


def encoder_group(root: zarr.Group, name: str, *, fingerprint: str, n: int, n_shards: int, shard_size: int,
                  out_shape: tuple[int, ...], dtype: str, attrs: dict, force: bool = False) -> tuple[zarr.Group, bool]:
    """Open (or create, or recreate when stale) the group of encoder ``name``; returns (group, fresh_start)."""
    if name in root:
        g = root[name]
        same = g.attrs.get("fingerprint") == fingerprint and tuple(g["emb"].shape) == (n, *out_shape) \
            and str(g["emb"].dtype) == dtype
        if same and not force:
            return g, False
        why = "forced" if force else f"fingerprint {g.attrs.get('fingerprint')} -> {fingerprint}"
        log.info("%s: discarding its cached arrays (%s); other encoders' arrays are untouched", name, why)
        del root[name]  # removes the group's arrays and chunks from the store
    g = root.create_group(name)
    g.create_array("emb", shape=(n, *out_shape), dtype=dtype, chunks=(shard_size, *out_shape), fill_value=0)
    g.create_array("done", shape=(n_shards,), dtype=np.uint8, chunks=(1,), fill_value=0)
    g.attrs.update({**attrs, "fingerprint": fingerprint, "complete": False, "shard_size": shard_size,
                    "dims": list(out_shape), "dtype": dtype})
    return g, True
