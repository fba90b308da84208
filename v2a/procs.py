"""Worker processes that never outlive their parent, even when it is killed with SIGKILL (no orphans).

Each worker, as it starts (the pool's initializer), asks Linux to send it SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)`` through ctypes), checks that the parent is still the one that started it (it may have
died before that call), and starts a watchdog thread that exits the worker once its parent pid changes (the
fallback where prctl is unavailable: another OS, a restricted sandbox).

Linux sends the signal when the *thread* that started the worker exits: create and use the pool in one thread
(a ``with worker_pool(n) as pool:`` block), as the frames stage does.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)  # the parent is gone (we were re-parented): nobody will read our results


def exit_with_parent(parent_pid: int, use_prctl: bool = True, interval: float = 0.5) -> None:
    """Worker initializer: this process exits when ``parent_pid`` (the process that started it) dies."""
    if use_prctl:
        set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), daemon=True,
                     name="parent-watchdog").start()


def fork_is_safe() -> bool:
    """Whether forking this process is safe: Linux, and no thread but this one (a fork copies only the calling
    thread, so a lock another thread held would stay locked in the child)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def worker_pool(workers: int, use_prctl: bool = True, start: str = "spawn") -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, each of which exits when this process dies.

    ``start``: ``spawn`` (fresh interpreters: each imports what it runs) or ``fork`` (copies of this process,
    started in milliseconds with its imports done; only where :func:`fork_is_safe`, else spawn). A forked pool
    starts every worker here (its first ``submit``, before the pool's own management thread exists), so that
    threads the caller starts afterwards (a progress bar's) are never copied.
    """
    if start not in ("spawn", "fork"):
        raise ValueError(f"worker_pool: start must be 'spawn' or 'fork', got {start!r}")
    method = "fork" if start == "fork" and fork_is_safe() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=exit_with_parent,
                               initargs=(os.getpid(), use_prctl))
    if method == "fork":
        pool.submit(os.getpid).result()
    return pool


def bounded_map(pool: Executor, fn: Callable, jobs: Iterable[tuple], window: int) -> Iterator[tuple[int, Any]]:
    """``(position, fn(*job))`` for every job, in completion order, with at most ``window`` jobs submitted and not
    yet collected: jobs start in the order given and memory holds ``window`` results at most (a plain
    ``{pool.submit(...): ...}`` over a whole folder keeps every result alive until the last one is back)."""
    if window < 1:
        raise ValueError(f"bounded_map: window must be >= 1, got {window}")
    it = enumerate(jobs)
    inflight: dict = {}

    def fill() -> None:
        while len(inflight) < window:
            nxt = next(it, None)
            if nxt is None:
                return
            inflight[pool.submit(fn, *nxt[1])] = nxt[0]

    fill()
    while inflight:
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for f in sorted(done, key=inflight.__getitem__):
            yield inflight.pop(f), f.result()
        fill()
