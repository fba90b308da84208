"""Run as a script by tests/test_procs.py: a pool of workers (v2a.procs.worker_pool), their pids on stdout, then
the workers are kept busy until the test kills this process."""

import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from v2a.procs import worker_pool


def pid_after(seconds: float) -> int:
    time.sleep(seconds)  # long enough that each worker takes one task
    return os.getpid()


if __name__ == "__main__":
    workers, mode = int(sys.argv[1]), sys.argv[2]  # prctl | watchdog | plain (no guard: the control)
    start = sys.argv[3] if len(sys.argv) > 3 else "spawn"  # spawn | fork
    if mode == "plain":
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    else:
        pool = worker_pool(workers, use_prctl=mode == "prctl", start=start)
    pids = sorted({f.result() for f in [pool.submit(pid_after, 1.0) for _ in range(workers)]})
    for _ in range(workers):
        pool.submit(time.sleep, 600)
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(600)
