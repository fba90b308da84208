"""A small synthetic feature cache in the documented layout (docs/CONTRACTS.md), for tests and benchmarks.

Each clip has a "flash" at frame f (0..39). CAVP step f carries a spike direction, TimeChat's window holding f
carries another; with ``task="token"`` the AudioMAE target token k is vector A when the flash falls in token k's
5 frames, else B; with ``task="half"`` every token is A when the flash comes in the first 5 s, else B (plus a fixed
per-token offset and a little noise). So the target is a deterministic function of the visual features: the mean token cannot
predict it, a mapper that localises the flash can.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def write_synthetic_cache(path: str | Path, *, n: int = 96, shard_size: int = 16, cavp_dim: int = 16,
                          windows: int = 2, queries: int = 4, tc_dim: int = 24, n_tokens: int = 8,
                          target_dim: int = 32, steps: int = 40, n_val: int = 16, n_rejected: int = 2,
                          n_silent: int = 2, seed: int = 0, noise: float = 0.05, task: str = "token",
                          v2a: bool = False) -> dict:
    """Write the store; returns {"flash": (n,) frames, "split": (n,) str} for assertions. ``v2a`` adds V2A-Mapper's
    ``clip`` (T, cavp_dim) and ``clap`` (1, target_dim) groups: every frame carries the clip's class (flash in
    the first or second half, a semantic cue that survives pooling over frames), the CLAP target is that class's
    unit vector plus a little noise."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(str(path), mode="w")
    n_shards = -(-n // shard_size)
    flash = rng.integers(0, steps, size=n)
    split = np.array(["train"] * n, dtype=object)
    split[rng.permutation(n)[:n_val]] = "val"
    status = np.array([""] * n, dtype=object)
    status[rng.permutation(n)[:n_rejected]] = "decode error"
    valid = np.ones(n, dtype=bool)
    valid[rng.permutation(n)[:n_silent]] = False

    meta = root.create_group("meta")
    cols = {"id": np.array([f"clip{i:05d}" for i in range(n)], dtype=object), "label": np.array(["x"] * n, dtype=object),
            "split": split, "status": status, "n_frames": np.full(n, steps, np.int32),
            "audio_len": np.full(n, 160000, np.int32), "has_audio": np.ones(n, bool),
            "audio_silent": ~valid, "duration": np.full(n, 10.0, np.float32)}
    for name, values in cols.items():
        dtype = str if values.dtype == object else values.dtype
        meta.create_array(name, shape=(n,), dtype=dtype, chunks=(shard_size,))[:] = values
    meta.attrs.update({"n_clips": n, "shard_size": shard_size})

    # CAVP: noise + spike at the flash frame; L2-normalised per frame like the real encoder
    spike_c = rng.standard_normal(cavp_dim)
    cavp = rng.standard_normal((n, steps, cavp_dim)) * 0.3
    cavp[np.arange(n), flash] += 3 * spike_c
    cavp /= np.linalg.norm(cavp, axis=-1, keepdims=True)
    # TimeChat: per window, queries share a "flash here" direction when the window holds the flash
    spike_t = rng.standard_normal(tc_dim)
    tc = rng.standard_normal((n, windows, queries, tc_dim)) * 0.3
    win = flash * windows // steps
    tc[np.arange(n), win] += spike_t
    # targets: token k = A if the flash is in token k's span, else B
    a, b = rng.standard_normal(target_dim), rng.standard_normal(target_dim)
    if task == "token":  # localise the flash to one of the 8 tokens
        hit = np.arange(n_tokens)[None, :] == (flash * n_tokens // steps)[:, None]  # (n, n_tokens)
    else:  # "half": every token says whether the flash came in the first or second half (easier)
        hit = np.repeat((flash < steps // 2)[:, None], n_tokens, axis=1)
    target = np.where(hit[..., None], a, b) + 0.5 * rng.standard_normal((1, n_tokens, target_dim))
    target = target + noise * rng.standard_normal((n, n_tokens, target_dim))

    def group(name, data, extra=None):
        g = root.create_group(name)
        g.create_array("emb", shape=data.shape, dtype="float16", chunks=(shard_size, *data.shape[1:]))[:] = \
            data.astype(np.float16)
        g.create_array("done", shape=(n_shards,), dtype=np.uint8, chunks=(1,))[:] = 1
        g.attrs.update({"encoder": name, "config": {"synthetic": True}, "checkpoint": {"tiny_seed": seed},
                        "fps": 4.0, "dims": list(data.shape[1:]), "dtype": "float16",
                        "fingerprint": f"synthetic-{name}-{seed}", "complete": True, "shard_size": shard_size})
        return g

    group("cavp", cavp)
    group("timechat", tc)
    g = group("audiomae", target)
    g.create_array("valid", shape=(n,), dtype=bool, chunks=(shard_size,))[:] = valid
    if v2a:
        cls = (flash < steps // 2).astype(int)  # (n,)
        dirs = rng.standard_normal((2, cavp_dim))
        clip = dirs[cls][:, None, :] + 0.5 * rng.standard_normal((n, steps, cavp_dim))
        clip /= np.linalg.norm(clip, axis=-1, keepdims=True)
        heads = rng.standard_normal((2, target_dim))
        clap = heads[cls][:, None, :] + noise * rng.standard_normal((n, 1, target_dim))
        clap /= np.linalg.norm(clap, axis=-1, keepdims=True)
        group("clip", clip)
        g = group("clap", clap)
        g.create_array("valid", shape=(n,), dtype=bool, chunks=(shard_size,))[:] = valid
    return {"flash": flash, "split": split, "status": status, "valid": valid}
