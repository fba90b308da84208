import multiprocessing as mp
import os
import time

import pytest

from v2a.io import LockedError, atomic_path, atomic_write_json, check_clip_id, exclusive_lock, read_json


@pytest.mark.parametrize("ok", ["abc", "yt_-1a2B_000030", "clip.v2", "0"])
def test_safe_ids(ok):
    assert check_clip_id(ok) == ok


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden", "x..y", "a b", "é" * 3, "x" * 201])
def test_unsafe_ids_rejected(bad):
    with pytest.raises(ValueError, match="not safe"):
        check_clip_id(bad)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "f.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with atomic_path(p) as tmp:
            tmp.write_text("partial")
            1 / 0
    assert read_json(p) == {"a": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]


def _hold(path, ev):
    with exclusive_lock(path):
        ev.set()
        time.sleep(5)


def test_lock_refuses_second_holder_and_dies_with_process(tmp_path):
    lock = tmp_path / ".lock"
    ev = mp.get_context("spawn").Event()
    p = mp.get_context("spawn").Process(target=_hold, args=(lock, ev))
    p.start()
    assert ev.wait(30)
    with pytest.raises(LockedError, match=f"pid {p.pid}"):
        with exclusive_lock(lock):
            pass
    os.kill(p.pid, 9)
    p.join()
    with exclusive_lock(lock):  # SIGKILL released it
        pass
