"""The shared body of the encoder stages (``cavp``, ``timechat``, ``audiomae``).

Each reads the frames stage's shards, runs one frozen encoder in batches under ``torch.inference_mode()`` and
writes its group of the zarr cache, one chunk per shard, then marks the shard done. Finished shards are never
recomputed on rerun; changing the encoder's params (its fingerprint) discards only that encoder's group.

Importing this module (and the stage modules, which v2a/schema.py imports to check a configuration) imports
neither torch nor zarr: the functions that need them import them.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from frozen.grid import grid_of
from pipeline.framestore import iter_shard, read_plan
from v2a.dist import pick_device
from v2a.io import exclusive_lock

if TYPE_CHECKING:  # annotations only: the runner is not part of a stage's code fingerprint
    from v2a.runner import StageContext

log = logging.getLogger(__name__)
Positive = Annotated[int, Field(ge=1)]


class EncoderParams(BaseModel):
    """The params every encoder stage has; each stage module subclasses it with its own (one line per field)."""

    model_config = ConfigDict(extra="forbid")
    model: Literal["full", "tiny", "random-full"] = "full"  # full: released weights; tiny: seeded random small
    # model (tests, demo); random-full: the released size with seeded random weights (make smoke-full)
    seed: int = 0  # tiny: the seed of the random weights
    half: bool = False  # fp16 weights (CUDA only)
    dtype: Literal["float16", "float32"] = "float16"  # of the cached features


class EncoderRuntime(BaseModel):
    """``runtime`` of the encoder stages (not fingerprinted)."""

    model_config = ConfigDict(extra="forbid")
    batch_size: Positive = 8  # clips per encoder call
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    decode_threads: Positive = 4  # threads decoding a shard's frames while the previous one is encoded


class EncoderStage:
    """The ``run``/``preflight`` of an encoder stage module and its module ``__getattr__``, around ``load``: the
    stage's own function that imports its frozen network (``from frozen import cavp``, inside the function so that
    validating a configuration does not import torch, and written out so that the code fingerprint sees it)::

        _stage = EncoderStage(_encoder, __name__)
        run, preflight, __getattr__ = _stage.run, _stage.preflight, _stage.module_getattr
    """

    def __init__(self, load: Callable[[], ModuleType], module_name: str, *, reads_frames: bool = False):
        self.load, self.module_name = load, module_name
        self.reads_frames = reads_frames  # its build() takes the frames' clip grid (frozen/grid.py)

    def run(self, ctx: StageContext) -> None:
        run_encoder_stage(ctx, self.load(), reads_frames=self.reads_frames)

    def preflight(self, ctx: StageContext) -> list[tuple[str, str]]:
        """Problems found before the stage starts (no weights loaded): the frozen module's ``preflight``."""
        return encoder_preflight(ctx, self.load())

    def module_getattr(self, name: str):
        if name == "encoder":  # the frozen module, as the stage module's ``encoder`` before it was imported lazily
            return self.load()
        raise AttributeError(f"module {self.module_name!r} has no attribute {name!r}")


def encoder_preflight(ctx: StageContext, encoder: ModuleType) -> list[tuple[str, str]]:
    """The encoder module's own preflight (half without CUDA, checkpoint keys and shapes) as (item, problem) pairs.
    A CUDA device asked for without CUDA is the generic check's to report; the rest is checked for the CPU."""
    try:
        device = str(pick_device(ctx.runtime.device))
    except RuntimeError:
        device = "cpu"
    return [("params", msg) for msg in encoder.preflight(build_params(ctx.params), device)]


def build_params(params: EncoderParams) -> dict:
    """What a frozen encoder's ``build(params, device)`` takes (frozen/base.py: a plain mapping, the API the portable
    pipeline also builds from its recorded params): every field of the validated params but the cache's dtype."""
    return params.model_dump(exclude={"dtype"})


def read_record(ctx: StageContext) -> dict | None:
    path = ctx.cfg.zarr_path
    if not path.exists():
        return None
    from pipeline import cache  # zarr

    root = cache.open_store(path, "r")
    if ctx.name not in root:
        return None
    g = root[ctx.name]
    done = g["done"][:]
    rec = {"fingerprint": g.attrs.get("fingerprint"), "components": g.attrs.get("components"),
           "complete": bool(g.attrs.get("complete", False))}
    if not rec["complete"]:
        rec["progress"] = f"{int(done.sum())}/{len(done)} shards done"
    return rec


def _usable(enc_kind: str, meta: dict) -> bool:
    if enc_kind == "audio":
        return bool(meta["has_audio"]) and not bool(meta["audio_silent"]) and meta["audio_len"] > 0
    return True


def run_encoder_stage(ctx: StageContext, encoder_module: ModuleType, *, reads_frames: bool = False) -> None:
    """Run ``encoder_module.build(params, device)`` (a module of frozen/; ``reads_frames``: with ``grid=``, the
    clip grid the frames were decoded on) over every unfinished shard."""
    from pipeline import cache  # zarr

    plan = read_plan(ctx.cfg.frames_dir)
    n, n_shards, shard_size = plan["n_clips"], plan["n_shards"], plan["shard_size"]
    grid = grid_of(plan["params"])  # the frames as decoded: frame count, size, audio span
    p, rt = ctx.params, ctx.runtime
    device, batch_size, dtype = pick_device(rt.device), rt.batch_size, p.dtype
    name = ctx.name
    lock_dir = ctx.cfg.cache_dir
    with exclusive_lock(lock_dir / f".lock.{name}.rank{ctx.rank}", what=f"the {name} stage (rank {ctx.rank})"):
        encoder = encoder_module.build(build_params(p), device=device, **({"grid": grid} if reads_frames else {}))
        info = encoder.info
        with exclusive_lock(lock_dir / f".lock.{name}.setup", what=f"{name} setup", wait=True):
            root = cache.open_store(ctx.cfg.zarr_path, "a")
            attrs = {"encoder": info.name, "input_kind": info.input_kind, "config": info.config,
                     "checkpoint": info.checkpoint, "fps": grid.fps, "components": ctx.fingerprint.components,
                     "params": p.model_dump(mode="json")}
            g, fresh = cache.encoder_group(
                root, name, fingerprint=ctx.fingerprint.value, n=n, n_shards=n_shards, shard_size=shard_size,
                out_shape=tuple(info.output_shape), dtype=dtype, attrs=attrs, force=ctx.force and ctx.rank == 0)
            if info.input_kind == "audio" and "valid" not in g:
                g.create_array("valid", shape=(n,), dtype=bool, chunks=(shard_size,), fill_value=False)
        done = g["done"][:]
        todo = [k for k in range(n_shards) if k % ctx.world_size == ctx.rank and not done[k]]
        log.info("%s: %d/%d shards done, %d to do here on %s (batch %d)", name, int(done.sum()), n_shards,
                 len(todo), device, batch_size)
        want_frames, want_audio = info.input_kind == "frames", info.input_kind == "audio"

        decode_threads = rt.decode_threads

        def load(k: int):
            return list(iter_shard(ctx.cfg.frames_dir, k, want_frames=want_frames, want_audio=want_audio,
                                   grid=grid, threads=decode_threads))

        bar = tqdm(total=len(todo), unit="shard", desc=name, disable=not ctx.progress)
        with ThreadPoolExecutor(1) as prefetch:  # decode the next shard while this one is encoded
            nxt = prefetch.submit(load, todo[0]) if todo else None
            for i, k in enumerate(todo):
                clips = nxt.result()
                nxt = prefetch.submit(load, todo[i + 1]) if i + 1 < len(todo) else None
                _encode_shard(g, k, clips, encoder, shard_size, n, batch_size, dtype)
                bar.update(1)
        bar.close()
        done = g["done"][:]
        if done.all():
            g.attrs["complete"] = True
            log.info("%s: complete (%d clips, dims %s)", name, n, list(info.output_shape))
        else:
            log.warning("%s: %d shards still to do (other ranks?)", name, int((~done.astype(bool)).sum()))


def _encode_shard(g, k: int, clips, encoder, shard_size: int, n: int, batch_size: int, dtype: str) -> None:
    import torch

    start, stop = k * shard_size, min(n, (k + 1) * shard_size)
    out = np.zeros((stop - start, *g["emb"].shape[1:]), dtype=dtype)  # (rows, *out_shape)
    kind = encoder.info.input_kind
    valid = np.zeros(stop - start, dtype=bool)
    usable = [c for c in clips if _usable(kind, c.meta)]
    for b in range(0, len(usable), batch_size):
        batch = usable[b: b + batch_size]
        if kind == "frames":
            x = torch.from_numpy(np.stack([c.frames for c in batch]))  # (B, T, 224, 224, 3) uint8
            lengths = torch.tensor([c.meta["n_frames"] for c in batch])
        else:
            x = torch.from_numpy(np.stack([c.audio for c in batch]))  # (B, 160000) float32
            lengths = torch.tensor([c.meta["audio_len"] for c in batch])
        y = encoder.encode(x, lengths).float().numpy()  # (B, *out_shape)
        if not np.isfinite(y).all():
            raise RuntimeError(f"{encoder.info.name}: non-finite features in shard {k} (clips "
                               f"{[c.id for c in batch]}); check the weights and the half-precision setting")
        for c, row in zip(batch, y):
            out[c.index - start] = row
            valid[c.index - start] = True
    g["emb"][start:stop] = out
    if "valid" in g:
        g["valid"][start:stop] = valid
    g["done"][k] = 1  # last: the shard is complete
