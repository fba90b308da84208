"""Stage ``train``: feature cache -> GPT-2 mapper weights (``<out>/best``, ``<out>/last``, ``<out>/log.csv``).

Single CPU/GPU process by default; under torchrun (env RANK/WORLD_SIZE/LOCAL_RANK) it runs DDP with the same
global batch (micro_batch x world x accumulation), so results equal one process up to float error.

Data order: epoch e visits the train rows in ``default_rng([seed, e]).permutation``; global batch b is the slice
[b G, (b+1) G) (a last incomplete batch is dropped), and rank r takes its contiguous share of it. Dropout is
reseeded from (seed, step, rank) before every optimizer step, so a resumed run repeats the masks exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trainer import logs
from trainer.checkpoint import (EPOCHS, epoch_folder, has_checkpoint, read_checkpoint, rng_state, saves_epoch,
                                set_rng_state, write_checkpoint)
from trainer.config import TrainConfig
from trainer.data import check_cache, describe_rows, load_features, open_cache, select_rows
from trainer.mapper import build_mapper, objective
from trainer.validate import evaluate, loss_fn
from v2a.dist import pick_device, placement
from v2a.io import atomic_write_json, atomic_write_text, folder_lock, sha256_bytes

log = logging.getLogger(__name__)

# params that may change between a run and its resume (they do not change the maths beyond float error)
RESUME_FREE = {"device", "in_memory", "max_memory_gb", "ckpt_every_steps", "micro_batch", "extra", "tensorboard",
               "compile", "log_every"}


def setup_distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether we created the process group) from torchrun's environment."""
    where = placement()
    rank, world, local = where.rank, where.world_size, where.local_rank
    if world <= 1:
        return 0, 1, 0, False
    if dist.is_initialized():
        return rank, world, local, False
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world)
    return rank, world, local, True


def compile_mode(cfg: TrainConfig, device: torch.device) -> str | None:
    """The torch.compile mode to use (None: eager). ``auto``: the default mode on CUDA, eager on CPU."""
    if cfg.compile == "off" or (cfg.compile == "auto" and device.type != "cuda"):
        return None
    return "default" if cfg.compile == "auto" else cfg.compile


def maybe_compile(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    mode = compile_mode(cfg, device)
    if mode is None:
        return model
    log.info("train: torch.compile(mode=%r); the first steps compile the graph", mode)
    return torch.compile(model, mode=mode)


def train_step(model, opt, sched, params, cfg: TrainConfig, micro_batches, autocast, *, ddp: bool) -> torch.Tensor:
    """One optimizer step over ``micro_batches`` [(cavp, tc, target)]; returns the step's loss on the device.

    Nothing here waits for the device (no ``.item()``): the caller reads the loss when it logs.
    """
    accum = len(micro_batches)
    loss_sum = None
    for a, (cavp, tc, target) in enumerate(micro_batches):
        sync = model.no_sync if ddp and a + 1 < accum else contextlib.nullcontext
        with sync():
            with autocast:
                pred, goal = objective(model, cavp, tc, target)  # (micro, 8, D) each
            loss = loss_fn(cfg.loss, pred, goal) / accum
            loss.backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum


def lr_factor(cfg: TrainConfig, total_steps: int):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            t = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        return 1.0
    return f


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _check_resume(ck: dict, cfg: TrainConfig, run_id: dict) -> None:
    old, new = ck["config"], cfg.to_dict()
    changed = sorted(k for k in set(old) | set(new) if k not in RESUME_FREE and old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"cannot resume: train params {changed} differ from the checkpoint's "
                         f"({ {k: old.get(k) for k in changed} }); restore them or start over (resume=False)")
    old_id = ck["manifest"].get("run_id", {})
    diff = sorted(k for k in run_id if old_id.get(k) != run_id[k] and (k != "upstream_fingerprints" or (
        old_id.get(k) and run_id[k])))  # upstream fingerprints: compared only when both runs were given them
    if diff:
        raise ValueError(f"cannot resume: the data changed since the checkpoint ({diff}); start over (resume=False)")


def run(cfg: TrainConfig, *, cache: str, out_dir: str, resume: bool = True, progress: bool = True,
        upstream_fingerprints: dict | None = None, train_ids: str | Path | None = None, locked: bool = False) -> dict:
    """Train the mapper on the cache at ``cache``; write checkpoints and logs under ``out_dir``; return a summary.

    ``train_ids``: a file of clip ids to train on (trainer/subset.py); else ``cfg.subset_fraction`` decides.
    ``cfg.save_every: k`` also keeps ``<out_dir>/epochs/epoch-NNNN/`` (weights only) after epochs k, 2k, ... and the
    last, written before that epoch's ``last/`` (a kill in between redoes the epoch: the same weights again).
    ``locked``: the caller holds the run's lock already (trainer/stage.py); else rank 0 takes it here: ``.<name>.lock``
    beside ``out_dir`` (v2a.io.folder_lock), where a run set aside or replaced leaves it.
    """
    rank, world, local_rank, own_group = setup_distributed()
    out = Path(out_dir)
    lock = folder_lock(out, "the mapper run") if rank == 0 and not locked else contextlib.nullcontext()
    try:
        with lock:
            return _train(cfg, cache, out, resume, progress, upstream_fingerprints, rank, world, local_rank,
                          train_ids)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg, cache, out, resume, progress, upstream, rank, world, local_rank, train_ids=None) -> dict:
    t_start = time.perf_counter()
    # 1. check the cache and select rows (the training subset's ids are written with the run)
    root = open_cache(cache)
    dims = check_cache(cfg, root, upstream)
    train_rows, val_rows, val_from = select_rows(cfg, root, train_ids)
    data = describe_rows(root, train_rows, val_rows)
    id_lists = {name: data.pop(f"{name}_id_list") for name in ("train", "val")}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name, ids in id_lists.items():
            atomic_write_text(out / f"{name}_ids.txt", "".join(f"{i}\n" for i in ids))
    micro, accum = cfg.accumulation(world)
    G = cfg.global_batch
    steps_per_epoch = len(train_rows) // G
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_rows)} training rows are fewer than global_batch {G}; lower global_batch")
    device = pick_device(cfg.device, local_rank)
    train_set, val_set, data_mode, _ = load_features(cfg, root, dims, train_rows, val_rows, device)
    run_id = {"cache_fingerprints": dims["fingerprints"], "upstream_fingerprints": upstream or {},
              "train_rows": sha256_bytes(np.asarray(train_rows, np.int64).tobytes())[:16],
              "val_rows": sha256_bytes(np.asarray(val_rows, np.int64).tobytes())[:16],
              "train_ids": data["train_ids_sha256"]}
    # 2. model, optimizer, schedule
    mapper = build_mapper(cfg, dims).to(device)
    params = [p for p in mapper.parameters() if p.requires_grad]
    data.update(trainable_params=sum(p.numel() for p in params), total_params=sum(p.numel() for p in mapper.parameters()))
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            fused=device.type == "cuda")  # one kernel for all parameters on GPU
    total_steps = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, total_steps))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 \
        else contextlib.nullcontext()
    # 3. resume from last/ (or start over)
    st = {"epoch": 0, "batch": 0, "step": 0, "best_val": None, "best_epoch": None, "history": [],
          "loss_sum": 0.0, "loss_n": 0}
    if resume and has_checkpoint(out / "last"):
        ck = read_checkpoint(out / "last")
        _check_resume(ck, cfg, run_id)
        mapper.load_state_dict({k: v.to(device) for k, v in ck["weights"].items()}, strict=True)
        opt.load_state_dict(ck["train_state"]["optimizer"])
        sched.load_state_dict(ck["train_state"]["scheduler"])
        set_rng_state(ck["train_state"]["rng"])
        st = {k: ck["manifest"][k] for k in st}
        log.info("resuming from %s: epoch %d, batch %d, step %d", out / "last", st["epoch"], st["batch"], st["step"])
    else:
        if hasattr(mapper, "set_data_stats"):  # diffusion mappers diffuse normalised targets (saved as buffers)
            from trainer.diffusion_mapper import target_stats
            mapper.set_data_stats(*[s.to(device) if torch.is_tensor(s) else s for s in target_stats(train_set)])
        if rank == 0:
            for d in ("last", "best", EPOCHS):
                shutil.rmtree(out / d, ignore_errors=True)
    model = mapper
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            mapper, device_ids=[device.index] if device.type == "cuda" else None)
    model = maybe_compile(model, cfg, device)
    mean_token = train_set.mean_target().to(device) if rank == 0 else None
    writer = logs.tensorboard(out, cfg.tensorboard) if rank == 0 else None

    def save(folder: str, with_state: bool) -> None:
        manifest = {**st, "run_id": run_id, "steps_per_epoch": steps_per_epoch, "seed": cfg.seed,
                    "world_size": world, "data_order": "default_rng([seed, epoch]).permutation; drop last"}
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state()} \
            if with_state else None
        write_checkpoint(out / folder, weights=mapper.state_dict(), manifest=manifest, config=cfg.to_dict(),
                         mapper=mapper.spec.to_dict(), train_state=state)

    # 4. train
    t_data = t_steps = 0.0
    model.train()
    for epoch in range(st["epoch"], cfg.epochs):
        t_epoch = time.perf_counter()
        perm = epoch_order(cfg.seed, epoch, len(train_set))
        bar = tqdm(range(st["batch"], steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not logs.show_bar(progress, rank), unit="step", leave=False)
        loss_acc = torch.tensor(st["loss_sum"], dtype=torch.float64, device=device)  # summed on the device
        for b in bar:
            t0 = time.perf_counter()
            mine = perm[b * G: (b + 1) * G][rank * micro * accum: (rank + 1) * micro * accum]
            torch.manual_seed(cfg.seed * 1_000_003 + st["step"] * 1009 + rank)  # dropout masks per step
            td = time.perf_counter()
            batches = [train_set.batch(mine[a * micro: (a + 1) * micro]) for a in range(accum)]
            t_data += time.perf_counter() - td
            loss_sum = train_step(model, opt, sched, params, cfg, batches, autocast, ddp=world > 1)
            if world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_acc += loss_sum.double()
            st.update(step=st["step"] + 1, batch=b + 1, loss_n=st["loss_n"] + 1)
            t_steps += time.perf_counter() - t0
            if cfg.log_every and st["step"] % cfg.log_every == 0:
                bar.set_postfix(loss=f"{float(loss_sum):.4f}")  # the only wait for the device inside an epoch
            if rank == 0 and cfg.ckpt_every_steps and st["step"] % cfg.ckpt_every_steps == 0 \
                    and b + 1 < steps_per_epoch:
                st["loss_sum"] = float(loss_acc)
                save("last", True)
        st["loss_sum"] = float(loss_acc)
        bar.close()
        # 5. validate (rank 0), log, checkpoint
        row = {"epoch": epoch + 1, "step": st["step"], "lr": sched.get_last_lr()[0],
               "train_loss": st["loss_sum"] / max(1, st["loss_n"]), "seconds": round(time.perf_counter() - t_epoch, 3)}
        if rank == 0 and len(val_set):
            row.update(evaluate(mapper, val_set, mean_token, batch=max(micro, 16), loss=cfg.loss, autocast=autocast))
        st.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_n=0)
        if rank == 0:
            st["history"] = st["history"] + [row]
            improved = "val_loss" in row and (st["best_val"] is None or row["val_loss"] < st["best_val"])
            if improved:
                st.update(best_val=row["val_loss"], best_epoch=epoch + 1)
            logs.write_csv(out, st["history"])
            logs.add_scalars(writer, row, epoch + 1)
            if improved:
                save("best", False)
            log.info("%s", logs.epoch_line(row, cfg.epochs))
            if saves_epoch(epoch + 1, cfg.save_every, cfg.epochs):
                save(epoch_folder(epoch + 1), False)
            save("last", True)
        if world > 1:
            dist.barrier()
    # 6. summary
    summary = {"out_dir": str(out), "best_dir": str(out / "best") if st["best_epoch"] else None,
               "last_dir": str(out / "last"), "epochs_done": st["epoch"], "steps": st["step"],
               "best_val_loss": st["best_val"], "best_epoch": st["best_epoch"],
               "final": st["history"][-1] if st["history"] else None, "train_rows": len(train_rows),
               "val_rows": len(val_rows), "val_from": val_from, "data_mode": data_mode, "world_size": world,
               "micro_batch": micro, "accumulation": accum, "device": str(device),
               "timing": {"total_s": time.perf_counter() - t_start, "steps_s": t_steps, "data_s": t_data,
                          "data_share": t_data / t_steps if t_steps else None},
               "run_id": run_id, **data,
               "scale_hours": data["train_audio_hours"] * st["epoch"]}  # paper's Scale: audio hours x epochs
    if rank == 0:
        atomic_write_json(out / "summary.json", summary)
        if writer is not None:
            writer.close()
    return summary
