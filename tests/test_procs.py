"""No orphans: the workers of ``--workers N`` (v2a/procs.py) exit when their parent dies, even by SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper, state Z, has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
    return state not in ("Z", "X")


def start_parent(mode: str, workers: int = 2, start: str = "spawn") -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    parent = subprocess.Popen([sys.executable, str(REPO / "tests" / "orphan_parent.py"), str(workers), mode, start],
                              stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = parent.stdout.readline()  # blocks until the workers have answered
    pids = [int(p) for p in line.split()]
    assert len(pids) == workers and parent.pid not in pids, line
    return parent, pids


@linux_only
@pytest.mark.parametrize("start", ["spawn", "fork"])
@pytest.mark.parametrize("mode", ["prctl", "watchdog"])  # watchdog: the fallback where prctl is unavailable
def test_workers_exit_when_the_parent_is_killed(mode, start):
    parent, pids = start_parent(mode, start=start)
    try:
        assert all(alive(p) for p in pids)
        for p in pids:  # each worker is a child of the parent
            ppid = next(ln.split()[1] for ln in Path(f"/proc/{p}/status").read_text().splitlines()
                        if ln.startswith("PPid:"))
            assert int(ppid) == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5.0
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if alive(p)], "workers outlived their SIGKILLed parent"
    finally:
        for p in pids:  # never leave a process behind, even when the test fails
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


@linux_only
def test_control_plain_pool_workers_are_orphaned():
    """Without the guard the workers survive a SIGKILLed parent: the check above can fail."""
    parent, pids = start_parent("plain")
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        time.sleep(1.0)
        assert all(alive(p) for p in pids)
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


@linux_only
def test_parent_death_signal_is_armed():
    code = ("import signal, ctypes; from v2a.procs import set_parent_death_signal as s; assert s(signal.SIGKILL); "
            "v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert int(out) == signal.SIGKILL  # PR_GET_PDEATHSIG (2) reads back what was set


FORK_PROBE = """
import threading
from v2a.procs import worker_pool
import fork_probe

fork_probe.MARK["set_in_parent"] = True  # a forked worker sees it; a spawned one imports the module afresh
with worker_pool(1, start="fork") as pool:
    forked = pool.submit(fork_probe.mark).result()
with worker_pool(1, start="spawn") as pool:
    spawned = pool.submit(fork_probe.mark).result()
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
with worker_pool(1, start="fork") as pool:  # another thread runs: forking could copy a held lock, so it spawns
    beside_thread = pool.submit(fork_probe.mark).result()
stop.set()
t.join()
print(forked, spawned, beside_thread)
"""


@linux_only
def test_fork_pool_copies_the_parent_and_falls_back_to_spawn_beside_threads(tmp_path):
    (tmp_path / "fork_probe.py").write_text('MARK = {"set_in_parent": False}\n\n\ndef mark():\n'
                                            '    return MARK["set_in_parent"]\n')
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}  # a fresh process: no thread of pytest's
    out = subprocess.run([sys.executable, "-c", FORK_PROBE], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]
    from v2a.procs import worker_pool

    with pytest.raises(ValueError, match="start must be"):
        worker_pool(1, start="forkserver")


def test_bounded_map_keeps_at_most_window_jobs_in_flight():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from v2a.procs import bounded_map

    lock, live, peak = threading.Lock(), [0], [0]

    def job(i: int, delay: float) -> int:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(delay)
        with lock:
            live[0] -= 1
        return i * i

    jobs = [(i, 0.002 * (i % 3)) for i in range(40)]
    submitted = []

    def calls():
        for j in jobs:
            submitted.append(j[0])
            yield j

    with ThreadPoolExecutor(8) as pool:
        got = []
        for pos, value in bounded_map(pool, job, calls(), window=3):
            got.append((pos, value))
            assert len(submitted) - len(got) <= 3  # never more than the window submitted and not collected
    assert sorted(got) == [(i, i * i) for i in range(40)]
    assert peak[0] <= 3
    with pytest.raises(ValueError, match="window"):
        next(bounded_map(pool, job, calls(), window=0))
