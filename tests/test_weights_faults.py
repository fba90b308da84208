"""`v2a weights fetch` against a server on 127.0.0.1 that misbehaves (tests/weights_server.py): every misbehaviour,
for an entry with and without a published checksum, ends with nothing renamed into place, the bytes kept aside as
``.corrupt``, one line saying why and no lock record; a file already at the final path is proven before
"already there"; a broken lock file stops the command before any request; --timeout bounds a stall."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from weights_server import FileServer
from v2a import weights as W
from v2a.io import InputError


def checkpoint(seed: int, legacy: bool = False) -> bytes:
    """A real torch checkpoint of ~400 KB (several times the resume overlap)."""
    g = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"model": {"a.weight": torch.randn(250, 200, generator=g), "a.bias": torch.randn(200, generator=g),
                          "steps": torch.arange(9)}}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def entry(server: FileServer, path: str, data: bytes, checksum: bool, **kw) -> W.Entry:
    server.files[path] = data
    sums = {"sha256": hashlib.sha256(data).hexdigest()} if checksum else {}
    return W.Entry(name="toy", url=server.url + path, file=Path(path).name, **sums, **kw)


def assert_kept_aside(tmp_path: Path, file: str, err: pytest.ExceptionInfo, *why: str) -> bytes:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("weights fetch toy: ") and "kept aside as" in msg, msg
    for w in why:
        assert w in msg, msg
    assert not (tmp_path / file).exists() and "toy" not in W.read_lock(tmp_path)
    return (tmp_path / f"{file}.corrupt").read_bytes()


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "sha256"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_html_error_pages_are_never_checkpoints(server, tmp_path, checksum, legacy):
    data = checkpoint(0, legacy)
    e = entry(server, "/h/a.pth", data, checksum)
    server.faults["/h/a.pth"] = "html"
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    assert assert_kept_aside(tmp_path, "a.pth", err, "HTML page", "text/html") == server.html
    server.faults["/h/a.pth"] = "html_as_binary"  # the same page labelled application/octet-stream
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    assert (tmp_path / "a.pth.corrupt.2").read_bytes() == server.html
    assert "does not verify" in str(err.value) and not (tmp_path / "a.pth").exists()
    del server.faults["/h/a.pth"]  # the server recovers: the next fetch is a clean download
    assert W.fetch(e, tmp_path, progress=False) == ("downloaded", tmp_path / "a.pth")
    assert (tmp_path / "a.pth").read_bytes() == data


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "sha256"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_body_cut_without_content_length(server, tmp_path, checksum, legacy):
    data = checkpoint(1, legacy)
    e = entry(server, "/c/b.pth", data, checksum)
    server.faults["/c/b.pth"] = "cut_unannounced"
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    assert assert_kept_aside(tmp_path, "b.pth", err, "does not verify") == data[: len(data) // 2]


def test_unknown_format_needs_an_announced_length(server, tmp_path):
    """A file whose format cannot be checked is proven only by the server's Content-Length (or a checksum)."""
    data = b"\x00\x01opaque bytes\x02" * 5000
    e = entry(server, "/u/model.tar", data, False)
    server.faults["/u/model.tar"] = "cut_unannounced"
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    assert assert_kept_aside(tmp_path, "model.tar", err, "nothing proves it complete") == data[: len(data) // 2]
    del server.faults["/u/model.tar"]
    assert W.fetch(e, tmp_path, progress=False)[0] == "downloaded"
    rec = W.read_lock(tmp_path)["toy"]
    assert rec["transfer"] == f"{len(data)} bytes, as the server announced" and rec["checked"] is None
    assert W.entry_state(e, tmp_path) == ("checked", tmp_path / "model.tar")


def interrupted(server: FileServer, e: W.Entry, tmp_path: Path, path: str, cut: int) -> None:
    """A first fetch whose connection drops after ``cut`` bytes: a trusted .part to resume."""
    server.drop_after[path] = cut
    with pytest.raises(W.WeightError, match="again to resume"):
        W.fetch(e, tmp_path, progress=False, retries=0)
    assert (tmp_path / (Path(path).name + ".part")).stat().st_size == cut


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "sha256"])
@pytest.mark.parametrize("fault", ["206_from_zero", "206_lying"])
def test_a_206_that_restarts_at_byte_zero(server, tmp_path, checksum, fault):
    data = checkpoint(2)
    e = entry(server, "/r/c.pth", data, checksum)
    cut = len(data) // 2
    interrupted(server, e, tmp_path, "/r/c.pth", cut)
    server.faults["/r/c.pth"] = fault
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False, retries=0)
    why = "does not start there" if fault == "206_from_zero" else "does not continue it"
    assert assert_kept_aside(tmp_path, "c.pth", err, why) == data[:cut]  # nothing appended to the partial file
    assert not (tmp_path / "c.pth.part").exists() and not (tmp_path / "c.pth.part.json").exists()
    del server.faults["/r/c.pth"]
    assert W.fetch(e, tmp_path, progress=False) == ("downloaded", tmp_path / "c.pth")  # from the start
    assert (tmp_path / "c.pth").read_bytes() == data and server.requests[-1][2] is None


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "sha256"])
def test_a_garbage_part_from_an_earlier_try(server, tmp_path, checksum):
    data = checkpoint(3)
    e = entry(server, "/g/d.pth", data, checksum)
    garbage = bytes(range(256)) * 400  # 100 KB, not a prefix of the file
    # (1) with a record naming this URL (as an earlier fetch leaves it): the resume's overlap check refuses it
    (tmp_path / "d.pth.part").write_bytes(garbage)
    (tmp_path / "d.pth.part.json").write_text(json.dumps({"url": e.url, "validator": None}))
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False, retries=0)
    assert assert_kept_aside(tmp_path, "d.pth", err, "does not repeat the last 65536 bytes") == garbage
    # (2) without a record (another tool, an older version): kept aside, and the download starts from byte 0
    (tmp_path / "d.pth.part").write_bytes(garbage)
    assert W.fetch(e, tmp_path, progress=False, retries=0) == ("downloaded", tmp_path / "d.pth")
    assert (tmp_path / "d.pth").read_bytes() == data and (tmp_path / "d.pth.corrupt.2").read_bytes() == garbage
    assert [r[2] for r in server.requests] == ["bytes=36864-", None]


def test_a_part_longer_than_the_file_is_kept_aside(server, tmp_path):
    data = checkpoint(4)
    e = entry(server, "/l/e.pth", data, False)
    (tmp_path / "e.pth.part").write_bytes(data + b"\0" * 70_000)
    (tmp_path / "e.pth.part.json").write_text(json.dumps({"url": e.url}))
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False, retries=0)
    assert assert_kept_aside(tmp_path, "e.pth", err, "HTTP 416", "longer than the file") == data + b"\0" * 70_000


def test_a_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    data = checkpoint(5, legacy=True)
    e = entry(server, "/i/f.pth", data, False)
    interrupted(server, e, tmp_path, "/i/f.pth", 100_000)
    server.faults["/i/f.pth"] = "ignore_range"
    assert W.fetch(e, tmp_path, progress=False) == ("downloaded", tmp_path / "f.pth")
    assert (tmp_path / "f.pth").read_bytes() == data and not list(tmp_path.glob("*.corrupt*"))
    assert W.read_lock(tmp_path)["toy"]["checked"].startswith("legacy torch file: 3 storages")


# ------------------------------------------------------------------------------------------ already there


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "sha256"])
def test_a_corrupt_file_at_the_final_path_is_not_already_there(server, tmp_path, checksum):
    data = checkpoint(6)
    e = entry(server, "/p/g.pth", data, checksum)
    (tmp_path / "g.pth").write_bytes(data[: len(data) // 2])  # e.g. an interrupted copy, no lock record
    what, path = W.fetch(e, tmp_path, progress=False)
    assert what.startswith("downloaded, replacing a file that did not verify (") and path.read_bytes() == data
    assert (tmp_path / "g.pth.corrupt").read_bytes() == data[: len(data) // 2]  # kept, not lost
    n = len(server.requests)
    assert W.fetch(e, tmp_path, progress=False)[0] == "already there" and len(server.requests) == n


def test_a_good_file_without_a_record_is_proven_and_recorded(server, tmp_path):
    data = checkpoint(7)
    e = entry(server, "/p/h.pth", data, False)
    (tmp_path / "h.pth").write_bytes(data)
    assert W.entry_state(e, tmp_path) == ("present", tmp_path / "h.pth")  # not proven yet
    assert W.fetch(e, tmp_path, progress=False) == ("already there", tmp_path / "h.pth")
    assert server.requests == [] and W.read_lock(tmp_path)["toy"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert W.entry_state(e, tmp_path) == ("checked", tmp_path / "h.pth")


def test_a_file_changed_since_its_fetch_is_not_already_there(server, tmp_path):
    """No published checksum: the lock file's sha256 is the reference. Another valid checkpoint in its place is
    not the fetched file; when the server is down the file stays where it was and the fetch fails."""
    data, other = checkpoint(8), checkpoint(9)
    e = entry(server, "/p/k.pth", data, False)
    assert W.fetch(e, tmp_path, progress=False)[0] == "downloaded"
    (tmp_path / "k.pth").write_bytes(other)
    assert W.entry_state(e, tmp_path, verify=True)[0].startswith("corrupt: sha256 ")
    del server.files["/p/k.pth"]
    with pytest.raises(W.WeightError, match="HTTP 404"):
        W.fetch(e, tmp_path, progress=False)
    assert (tmp_path / "k.pth").read_bytes() == other  # untouched until a proven replacement exists
    server.files["/p/k.pth"] = data
    assert W.fetch(e, tmp_path, progress=False)[0].startswith("downloaded, replacing")
    assert (tmp_path / "k.pth").read_bytes() == data and (tmp_path / "k.pth.corrupt").read_bytes() == other


# ------------------------------------------------------------------------------------------ lock file, timeout, CLI


@pytest.mark.parametrize("text", ['{"toy": {"sha256": "ab"', "[1, 2]", '{"toy": 3}'])
def test_a_broken_lock_file_stops_before_any_download(server, tmp_path, text):
    data = checkpoint(10)
    e = entry(server, "/k/m.pth", data, False)
    (tmp_path / W.LOCK_NAME).write_text(text)
    with pytest.raises(InputError) as err:
        W.fetch(e, tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / W.LOCK_NAME) in msg and "expected the JSON object" in msg
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == [W.LOCK_NAME]


def test_a_stall_longer_than_timeout_is_a_dropped_connection(server, tmp_path):
    data = checkpoint(11)
    e = entry(server, "/t/n.pth", data, False)
    server.faults["/t/n.pth"], server.stall_bytes, server.stall_seconds = "stall", 100_000, 3.0
    t0 = time.monotonic()
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False, retries=0, timeout=0.3)
    assert time.monotonic() - t0 < 2.5
    assert "interrupted at 100000 bytes (no data for 0.3 s)" in str(err.value) and "--timeout" in str(err.value)
    assert W.fetch(e, tmp_path, progress=False, timeout=5)[0] == "downloaded"  # resumed; the stall was once
    assert (tmp_path / "n.pth").read_bytes() == data


def cli(*args: str):
    from lab.cli import app

    return CliRunner().invoke(app, ["-c", "none.yaml", "--no-progress", "weights", *args])


def test_cli_exit_codes_and_messages(server, tmp_path, monkeypatch, keep_logging):
    good, bad = checkpoint(12), checkpoint(13)
    server.files.update({"/x/good.pth": good, "/x/bad.pth": bad})
    server.faults["/x/bad.pth"] = "cut_unannounced"
    man = tmp_path / "manifest.yaml"
    man.write_text(yaml.safe_dump({"entries": {"good": {"url": server.url + "/x/good.pth", "file": "good.pth"},
                                               "bad": {"url": server.url + "/x/bad.pth", "file": "bad.pth"}}}))
    monkeypatch.setenv("V2A_MANIFEST", str(man))
    monkeypatch.chdir(tmp_path)
    wdir = tmp_path / "w"
    res = cli("fetch", "--dir", str(wdir), "--timeout", "5")
    assert res.exit_code == 1 and "good: downloaded" in res.output and "failed: bad" in res.output
    assert "bad: downloaded" not in res.output and (wdir / "bad.pth.corrupt").exists()
    res = cli("list", "--dir", str(wdir))
    assert res.exit_code == 0 and next(ln for ln in res.output.splitlines() if ln.startswith("good")).split()[1] \
        == "checked"
    (wdir / W.LOCK_NAME).write_text("{not json")
    n = len(server.requests)
    for cmd in ("fetch", "list"):
        res = cli(cmd, "--dir", str(wdir))
        assert res.exit_code == 2 and "Traceback" not in res.output
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and str(wdir / W.LOCK_NAME) in errors[0]
    assert len(server.requests) == n and not (wdir / "bad.pth").exists()
    res = cli("fetch", "--dir", str(wdir), "--timeout", "0")
    assert res.exit_code == 2  # --timeout must be positive
