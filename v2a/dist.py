"""Where this process runs: its rank among the processes of a job, and the device it computes on.

The one place that reads the launchers' environment (torchrun, SLURM ``srun`` tasks, SLURM job arrays), and the one
device picker; every stage goes through these two functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# (rank, world size) variable pairs, first match wins: torchrun / torch.distributed, SLURM tasks, SLURM arrays.
_LAUNCHERS = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"),
              ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"))


@dataclass(frozen=True)
class Placement:
    rank: int = 0  # global rank of this process
    world_size: int = 1  # processes in the job
    local_rank: int = 0  # rank on this machine (selects the GPU)


def _int(env: dict, key: str) -> int:
    value = env[key]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def placement(env: dict | None = None) -> Placement:
    """This process's rank, world size and local rank from the launcher's environment (1 process when none)."""
    env = os.environ if env is None else env
    for rank_key, world_key in _LAUNCHERS:
        if rank_key in env and world_key in env:
            rank, world = _int(env, rank_key), _int(env, world_key)
            if world < 1 or not 0 <= rank < world:
                raise ValueError(f"{rank_key}={rank} and {world_key}={world}: need 0 <= rank < world size")
            local_key = "LOCAL_RANK" if "LOCAL_RANK" in env else "SLURM_LOCALID"
            local = _int(env, local_key) if local_key in env else 0
            return Placement(rank, world, local)
    return Placement()


def pick_device(requested: str | None = "auto", local_rank: int | None = None):
    """The ``torch.device`` for a ``device`` setting: ``auto``/empty = this process's GPU when CUDA is available
    (``cuda:<local rank>``), else the CPU; ``cuda...`` without CUDA is an error that says what to set."""
    import torch

    local = placement().local_rank if local_rank is None else local_rank
    if requested in (None, "", "auto"):
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if str(requested).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available; use device: auto or cpu")
    return torch.device(requested)
