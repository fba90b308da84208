"""Where this process runs: its rank among the processes of a job, and the device it computes on.

The one place that reads the launchers' environment (torchrun, SLURM ``srun`` tasks, SLURM job arrays), and the one
device picker; every stage goes through these two functions.

Apple GPUs (MPS): ``device: auto`` takes CUDA, then MPS, then the CPU. Operations MPS lacks run on the CPU instead
(PyTorch's ``PYTORCH_ENABLE_MPS_FALLBACK=1``, which torch reads when it is imported: this module sets it on macOS
unless the user did, and it is imported before torch by every entry point); picking MPS logs that in one line.
Random noise never depends on the device: generation draws it from CPU generators (infer/core.py).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)
MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"
_LATE = "torch" in sys.modules and MPS_FALLBACK not in os.environ  # torch loaded before the fallback could be set
if sys.platform == "darwin":  # before torch is imported; a value the user set wins
    os.environ.setdefault(MPS_FALLBACK, "1")
_said: set[str] = set()

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


def mps_available() -> bool:
    """An Apple GPU that this torch can use."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(requested: str | None = "auto", local_rank: int | None = None):
    """The ``torch.device`` for a ``device`` setting: ``auto``/empty = this process's GPU when CUDA is available
    (``cuda:<local rank>``), else the Apple GPU (``mps``) when there is one, else the CPU; ``cuda...`` or ``mps``
    where it is not available is an error that says what to set."""
    import torch

    local = placement().local_rank if local_rank is None else local_rank
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local}")
        return _mps() if mps_available() else torch.device("cpu")
    if str(requested).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available; use device: auto or cpu")
    if str(requested).startswith("mps"):
        if not mps_available():
            raise RuntimeError(f"device {requested!r} was asked for but this torch has no usable MPS (Apple GPU); "
                               "use device: auto or cpu")
        return _mps()
    return torch.device(requested)


def _mps():
    import torch

    if "mps" not in _said:  # one line per process
        _said.add("mps")
        if os.environ.get(MPS_FALLBACK) == "1" and not _LATE:
            log.info("device mps (Apple GPU): operations MPS lacks run on the CPU (%s=1)", MPS_FALLBACK)
        else:
            log.warning("device mps (Apple GPU) without %s=1 when torch was loaded: an operation MPS lacks stops the "
                        "run; export %s=1 before starting Python to run such operations on the CPU",
                        MPS_FALLBACK, MPS_FALLBACK)
    return torch.device("mps")
