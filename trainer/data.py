"""The trainer's view of the feature cache (layout in docs/CONTRACTS.md): checks, row selection, batches.

The trainer reads only the zarr store. ``check_cache`` refuses (``CacheError``) when an array it needs is missing,
incomplete, shaped differently from its attributes or from the config, or stale (fingerprint differs from the
one the stage runner says is current). ``load_features`` then loads the selected rows once (in memory, CPU or
GPU tensors; TimeChat already pooled per window) or serves batches straight from zarr.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import zarr

from trainer.config import TrainConfig
from trainer.fusion import pool_timechat
from trainer.subset import choose as choose_subset
from v2a.io import sha256_bytes

log = logging.getLogger(__name__)

AUDIO_SR = 16_000  # the frames stage's audio rate (AudioMAE's input); meta/audio_len counts samples at this rate


class CacheError(ValueError):
    """The feature cache cannot be used for this training config (message says what to run or change)."""


def target_group(cfg: TrainConfig) -> str:
    """The cache group holding the targets: pooled AudioMAE, or CLAP for V2A-Mapper."""
    return "clap" if cfg.is_v2a else "audiomae"


def needed_groups(cfg: TrainConfig) -> list[str]:
    if cfg.is_v2a:
        return ["clip", "clap"]
    return {"both": ["cavp", "timechat"], "cavp": ["cavp"], "timechat": ["timechat"]}[cfg.encoders] + ["audiomae"]


def expected_inputs(cfg: TrainConfig) -> dict[str, dict]:
    """The cache arrays this config reads, with the per-clip shape it expects (None = any size)."""
    tg = target_group(cfg)
    out = {"meta/status": {"dims": []}, "meta/split": {"dims": []}, f"{tg}/valid": {"dims": []}}
    if cfg.is_v2a:  # V2A-Mapper: CLIP frames (T, D) -> one CLAP embedding (1, D)
        out["clip/emb"] = {"stage": "clip", "dims": [cfg.cavp_steps, None]}
        out["clap/emb"] = {"stage": "clap", "dims": [1, None]}
        return out
    if "cavp" in needed_groups(cfg):
        out["cavp/emb"] = {"stage": "cavp", "dims": [cfg.cavp_steps, cfg.cavp_dim]}
    if "timechat" in needed_groups(cfg):
        out["timechat/emb"] = {"stage": "timechat", "dims": [cfg.timechat_windows, None, cfg.timechat_dim]}
    out["audiomae/emb"] = {"stage": "audiomae", "dims": [cfg.n_tokens, cfg.audiomae_dim]}
    return out


def open_cache(path: str | Path) -> zarr.Group:
    if not Path(path).exists():
        raise CacheError(f"feature cache {path} does not exist: run the frames and encoder stages first (make extract)")
    return zarr.open_group(str(path), mode="r")


def check_cache(cfg: TrainConfig, root: zarr.Group, upstream_fingerprints: dict | None = None) -> dict:
    """Verify the cache against ``cfg``; return the sizes found and the groups' fingerprints, or raise CacheError."""
    problems: list[str] = []
    if "meta" not in root or "status" not in root["meta"] or "split" not in root["meta"]:
        raise CacheError("the feature cache has no meta/status or meta/split: run the frames stage")
    n = root["meta"]["status"].shape[0]
    found: dict = {"n_clips": n, "fingerprints": {}}
    for name, want in expected_inputs(cfg).items():
        if "stage" not in want:
            continue
        group = want["stage"]
        if group not in root or "emb" not in root[group]:
            problems.append(f"{name} is missing: run the {group} stage")
            continue
        g, emb = root[group], root[group]["emb"]
        attrs = dict(g.attrs)
        found["fingerprints"][group] = attrs.get("fingerprint")
        if not attrs.get("complete", False):
            done = g["done"][:] if "done" in g else np.zeros(0)
            problems.append(f"{group} is incomplete ({int(done.sum())}/{len(done)} shards done): finish the "
                            f"{group} stage before training")
        elif "done" in g and not g["done"][:].all():
            problems.append(f"{group} says complete but some shards are not done: rerun the {group} stage")
        shape = tuple(emb.shape)
        if shape[0] != n:
            problems.append(f"{name} has {shape[0]} rows but meta has {n}: the cache mixes two runs, rerun {group}")
        if list(shape[1:]) != list(attrs.get("dims", shape[1:])):
            problems.append(f"{name} has per-clip shape {list(shape[1:])} but its attribute dims says {attrs['dims']}")
        if len(shape) - 1 != len(want["dims"]) or any(w is not None and w != s for w, s in zip(want["dims"], shape[1:])):
            problems.append(f"{name} has per-clip shape {list(shape[1:])}, the train config expects "
                            f"{['any' if w is None else w for w in want['dims']]}: fix the train params or rerun {group}")
        up = (upstream_fingerprints or {}).get(group)
        if up is not None and up != attrs.get("fingerprint"):
            problems.append(f"{group} is stale: the cache holds fingerprint {attrs.get('fingerprint')} but the "
                            f"stage is now {up}; rerun the {group} stage")
        found[group] = shape[1:]
    tg = target_group(cfg)
    if tg in root and "valid" not in root[tg]:
        problems.append(f"{tg}/valid is missing: rerun the {tg} stage")
    if "timechat" in found and cfg.upsample == "window":
        a = dict(root["timechat"].attrs)
        stride = cfg.timechat_stride or (a.get("params") or {}).get("stride") or (a.get("config") or {}).get("stride")
        if not stride:
            problems.append("upsample 'window' needs the TimeChat stride: the cache's timechat attributes do not "
                            "record it, set timechat_stride in the train params")
        found["timechat_stride"] = int(stride) if stride else None
    if problems:
        raise CacheError("the feature cache cannot be used for training:\n  - " + "\n  - ".join(problems))
    if cfg.is_v2a:
        found.update(clip_steps=found["clip"][0], clip_dim=found["clip"][1], n_tokens=found["clap"][0],
                     target_dim=found["clap"][1])
        return found
    cv, tc, am = found.get("cavp"), found.get("timechat"), found["audiomae"]
    found.update(cavp_steps=cv[0] if cv else cfg.cavp_steps, cavp_dim=cv[1] if cv else 0,
                 timechat_windows=tc[0] if tc else 0, timechat_queries=tc[1] if tc else 0, timechat_dim=tc[2] if tc else 0,
                 n_tokens=am[0], target_dim=am[1])
    return found


def check(cfg: TrainConfig, cache: str | Path, upstream_fingerprints: dict | None = None) -> dict:
    """``check_cache`` on the store at ``cache`` (for the CLI: ``v2a status`` / before launching torchrun)."""
    return check_cache(cfg, open_cache(cache), upstream_fingerprints)


def _strings(a) -> np.ndarray:
    """zarr string arrays come back as numpy StringDType (or object): plain Python str objects."""
    return np.array([str(v) for v in np.asarray(a).tolist()], dtype=object)


def split_counts(splits) -> str:
    """'test 2, train 5': clips per split value (for messages), or 'none'."""
    values, counts = np.unique(np.asarray(splits, dtype=str), return_counts=True)
    return ", ".join(f"{v or '(empty)'} {c}" for v, c in zip(values.tolist(), counts.tolist())) or "none"


def select_rows(cfg: TrainConfig, root: zarr.Group, id_file: str | Path | None = None
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, val rows, how they were chosen): status == '' and <target>/valid (audiomae, or clap for V2A-Mapper), split train / val.

    The training subset (``cfg.subset_fraction`` or the id list ``id_file``, see trainer/subset.py) is taken from
    the usable training rows first; with no 'val' split, validation is held out of the clips the subset left out
    (so the subset is trained on whole), or of the training rows when nothing was left out. No validation rows at
    all (no 'val' clip and val_fraction 0, or a single training row) is a documented skip, logged: training runs
    without validation and writes no ``best/``. No training rows is a :class:`CacheError`.
    """
    status = _strings(root["meta"]["status"][:])
    split = _strings(root["meta"]["split"][:])
    valid = np.asarray(root[target_group(cfg)]["valid"][:]).astype(bool)
    ok = (status == "") & valid
    train, val = np.flatnonzero(ok & (split == "train")), np.flatnonzero(ok & (split == "val"))
    how, pool = "split == 'val'", train
    if len(train) and (id_file is not None or cfg.subset_fraction < 1.0):
        train, rest, sub_how = choose_subset(train, _strings(root["meta"]["id"][:]), _strings(root["meta"]["label"][:]),
                                             fraction=cfg.subset_fraction, seed=cfg.subset_seed, id_file=id_file)
        how, pool = f"subset: {sub_how}; val: {how}", rest if len(rest) else train
    if len(val) == 0 and cfg.val_fraction > 0 and len(pool) > 1:
        k = min(len(pool) - (pool is train), max(1, int(math.ceil(cfg.val_fraction * len(train)))))
        perm = np.random.default_rng([cfg.seed, 7]).permutation(len(pool))
        val = np.sort(pool[perm[:k]])
        train = np.sort(pool[perm[k:]]) if pool is train else train
        where = "train rows" if pool is train else "rows left out of the subset"
        held = f"{k} {where} held out (val_fraction {cfg.val_fraction}, seed {cfg.seed})"
        how = held if how == "split == 'val'" else how.replace("split == 'val'", held)
    if len(train) == 0:
        raise CacheError(f"no usable training rows (status == '', {target_group(cfg)}/valid, split == 'train') among "
                         f"{len(status)} clips (usable per split: {split_counts(split[ok])}): check the labels "
                         "file's split column and the rejects")
    if len(val) == 0:  # a documented skip, not an error: nothing to validate on (docs/full-size.md)
        why = (f"val_fraction {cfg.val_fraction:g}" if cfg.val_fraction == 0 else
               f"val_fraction {cfg.val_fraction:g} but {len(pool)} row{'s' * (len(pool) != 1)} to hold out of")
        how = (f"{how}: none (no usable clip in split 'val', {why}); validation skipped, best/ is not written "
               "and the generate stage's mapper: best takes last/")
        log.warning("train: no validation rows (no usable clip in split 'val', %s): validation skipped; best/ is "
                    "not written and the generate stage's `mapper: best` takes last/", why)
    if cfg.val_max_clips is not None and len(val) > cfg.val_max_clips:
        val = val[np.random.default_rng([cfg.seed, 11]).permutation(len(val))[: cfg.val_max_clips]]
        val = np.sort(val)
    return train, val, how


def describe_rows(root: zarr.Group, train_rows: np.ndarray, val_rows: np.ndarray) -> dict:
    """Ids of the chosen rows (written with the run), their sha256, and the training audio in hours.

    Audio time = the real audio of each training clip (``meta/audio_len`` at 16 kHz, at most the 10 s decoded), so
    ``train_audio_hours x epochs`` is the paper's Scale column (section 4.2.1).
    """
    ids = _strings(root["meta"]["id"][:])
    train_ids, val_ids = [str(i) for i in ids[train_rows]], [str(i) for i in ids[val_rows]]
    audio_len = np.asarray(root["meta"]["audio_len"][:], dtype=np.int64)
    seconds = float(audio_len[train_rows].sum()) / AUDIO_SR
    return {"train_id_list": train_ids, "val_id_list": val_ids,
            "train_ids_sha256": sha256_bytes("".join(f"{i}\n" for i in train_ids).encode("utf-8")),
            "train_clips": len(train_ids), "train_audio_hours": seconds / 3600.0}


class Features:
    """Selected rows of the cache; ``batch(positions)`` -> (cavp, timechat, target) float32 on ``device``.

    ``mode``: ``memory`` (rows loaded once), ``zarr`` (one sorted read per batch) or ``per_sample`` (one zarr
    read per row, the slow baseline of the benchmark). TimeChat is pooled per window as it is read.
    """

    def __init__(self, root: zarr.Group, rows: np.ndarray, cfg: TrainConfig, *, mode: str, device="cpu",
                 data_device="cpu"):
        self.root, self.rows, self.cfg, self.mode = root, np.asarray(rows), cfg, mode
        self.device, self.data_device = torch.device(device), torch.device(data_device)
        self.groups = needed_groups(cfg)
        self.mem: dict[str, torch.Tensor] = {}
        if mode == "memory":
            for g in self.groups:
                self.mem[g] = self._read_blocks(g).to(self.data_device)

    def __len__(self) -> int:
        return len(self.rows)

    def _convert(self, group: str, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if group == "timechat":
            return pool_timechat(t.float(), self.cfg.tc_pool)  # (n, W, Dt) float32
        return t  # cache dtype (float16): converted per batch

    def _read_blocks(self, group: str) -> torch.Tensor:
        """The selected rows of ``group/emb``, read chunk by chunk (memory = selected rows only)."""
        arr = self.root[group]["emb"]
        step = arr.chunks[0]
        parts = []
        for start in range(0, arr.shape[0], step):
            sel = self.rows[(self.rows >= start) & (self.rows < start + step)]
            if len(sel):
                parts.append(self._convert(group, arr[start: start + step][sel - start]))
        return torch.cat(parts) if parts else self._convert(group, arr[0:0])  # no rows: (0, ...), e.g. no val

    def _read_rows(self, group: str, rows: np.ndarray) -> torch.Tensor:
        arr = self.root[group]["emb"]
        if self.mode == "per_sample":
            return self._convert(group, np.stack([arr[int(r)] for r in rows]))
        order = np.argsort(rows)
        a = arr.get_orthogonal_selection((rows[order],))
        out = np.empty_like(a)
        out[order] = a
        return self._convert(group, out)

    def batch(self, positions) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        positions = np.asarray(positions)
        got = {}
        for g in self.groups:
            if self.mode == "memory":
                t = self.mem[g].index_select(0, torch.as_tensor(positions, device=self.data_device))
            else:
                t = self._read_rows(g, self.rows[positions])
            got[g] = t.to(self.device, non_blocking=True).float()
        if self.cfg.is_v2a:
            return got["clip"], None, got["clap"]  # (B, T, D_clip), -, (B, 1, D_clap)
        return got.get("cavp"), got.get("timechat"), got["audiomae"]

    def mean_target(self, chunk: int = 1024) -> torch.Tensor:
        """Training-set mean of each of the n_tokens positions (n_tokens, D), float64 accumulation."""
        total = None
        for s in range(0, len(self), chunk):
            t = self.batch(np.arange(s, min(len(self), s + chunk)))[2].double().sum(0)
            total = t if total is None else total + t
        return (total / len(self)).float()


def bytes_per_row(dims: dict, cfg: TrainConfig) -> int:
    b = dims["n_tokens"] * dims["target_dim"] * 2
    if cfg.is_v2a:
        return b + dims["clip_steps"] * dims["clip_dim"] * 2
    if "cavp" in needed_groups(cfg):
        b += dims["cavp_steps"] * dims["cavp_dim"] * 2
    if "timechat" in needed_groups(cfg):
        q = dims["timechat"][1] if cfg.tc_pool == "none" else 1
        b += dims["timechat_windows"] * q * dims["timechat_dim"] * 4
    return b


def load_features(cfg: TrainConfig, root: zarr.Group, dims: dict, train_rows, val_rows, device) -> tuple:
    """(train Features, val Features, mode, data device) following ``cfg.in_memory`` and ``cfg.max_memory_gb``."""
    need = bytes_per_row(dims, cfg) * (len(train_rows) + len(val_rows))
    fits = need < cfg.max_memory_gb * 2**30
    mode = "memory" if cfg.in_memory == "yes" or (cfg.in_memory == "auto" and fits) else "zarr"
    data_device = torch.device("cpu")
    if mode == "memory" and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        data_device = torch.device(device) if need < 0.25 * free else data_device
    log.info("data: %d train / %d val rows, %.2f GB selected, %s on %s", len(train_rows), len(val_rows),
             need / 2**30, mode, data_device)
    mk = lambda rows: Features(root, rows, cfg, mode=mode, device=device, data_device=data_device)  # noqa: E731
    return mk(train_rows), mk(val_rows), mode, data_device
