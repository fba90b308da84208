"""The weights manifest and `v2a weights fetch/list`: downloads from an HTTP server on 127.0.0.1 started here
(full download, resume after a dropped connection, checksum mismatch, 404), a hub entry through HF_ENDPOINT pointed
at the same server, and the offline behaviour."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from weights_server import HUB_COMMIT, FileServer
from v2a import weights as W

REPO = Path(__file__).resolve().parent.parent


def state_dict_bytes(n: int = 50_000, seed: int = 0) -> bytes:
    """A real checkpoint file (torch.save of a small state dict), a few hundred KB."""
    g = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"model": {"fc.weight": torch.randn(n // 10, 10, generator=g), "fc.bias": torch.zeros(10)}}, buf)
    return buf.getvalue()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def url_entry(server: FileServer, path: str, data: bytes | None, **kw) -> W.Entry:
    if data is not None:
        server.files[path] = data
    return W.Entry(name="toy", url=server.url + path, file=Path(path).name, used_by=("cavp",), **kw)


def test_full_download_verifies_and_renames(server, tmp_path):
    data = state_dict_bytes()
    e = url_entry(server, "/w/toy.pth", data, sha256=hashlib.sha256(data).hexdigest())
    what, path = W.fetch(e, tmp_path, progress=False)
    assert what == "downloaded" and path == tmp_path / "toy.pth" and path.read_bytes() == data
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.corrupt"))
    assert torch.load(path, weights_only=True)["model"]["fc.bias"].shape == (10,)
    lock = W.read_lock(tmp_path)["toy"]
    assert lock["sha256"] == hashlib.sha256(data).hexdigest() and lock["verified"] is True
    assert W.entry_state(e, tmp_path) == ("verified", path)
    assert W.fetch(e, tmp_path, progress=False)[0] == "already there"
    assert [r for r in server.requests if r[0] == "GET"] == [("GET", "/w/toy.pth", None)]


def test_md5_and_sha256_prefix_are_checked(server, tmp_path):
    data = state_dict_bytes(seed=1)
    ok = url_entry(server, "/a.pth", data, md5=hashlib.md5(data).hexdigest(),
                   sha256_prefix=hashlib.sha256(data).hexdigest()[:8])
    assert W.fetch(ok, tmp_path, progress=False)[0] == "downloaded"
    bad = url_entry(server, "/b.pth", data, sha256_prefix="00000000" if not
                    hashlib.sha256(data).hexdigest().startswith("00000000") else "11111111")
    with pytest.raises(W.WeightError, match="starts with"):
        W.fetch(bad, tmp_path, progress=False)


def test_resume_after_the_connection_drops(server, tmp_path):
    data = state_dict_bytes(seed=2)
    e = url_entry(server, "/w/big.pth", data, sha256=hashlib.sha256(data).hexdigest())
    cut = len(data) // 3
    server.drop_after["/w/big.pth"] = cut
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False, retries=0)
    msg = str(err.value)
    assert "\n" not in msg and "toy" in msg and f"at {cut} bytes" in msg and "again to resume" in msg
    assert not (tmp_path / "big.pth").exists()
    assert (tmp_path / "big.pth.part").stat().st_size == cut
    W.fetch(e, tmp_path, progress=False, retries=0)  # the second call resumes
    assert (tmp_path / "big.pth").read_bytes() == data and not (tmp_path / "big.pth.part").exists()
    assert server.requests[-1] == ("GET", "/w/big.pth", f"bytes={cut - W.transfer.OVERLAP}-")  # asks again for
    # the last OVERLAP bytes it has, to check that the answer continues them


def test_resume_within_one_call(server, tmp_path):
    data = state_dict_bytes(seed=3)
    e = url_entry(server, "/c.pth", data, sha256=hashlib.sha256(data).hexdigest())
    server.drop_after["/c.pth"] = 1000
    W.fetch(e, tmp_path, progress=False, retries=2)
    assert (tmp_path / "c.pth").read_bytes() == data
    assert [r[2] for r in server.requests] == [None, "bytes=0-"]  # 1000 bytes < OVERLAP: all asked again


def test_checksum_mismatch_keeps_the_download_aside(server, tmp_path):
    data = state_dict_bytes(seed=4)
    wrong = hashlib.sha256(b"something else").hexdigest()
    e = url_entry(server, "/d.pth", data, sha256=wrong)
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "does not verify" in msg and wrong in msg and hashlib.sha256(data).hexdigest() in msg
    assert not (tmp_path / "d.pth").exists() and not (tmp_path / "d.pth.part").exists()
    assert (tmp_path / "d.pth.corrupt").read_bytes() == data
    assert "toy" not in W.read_lock(tmp_path)


def test_404_is_one_line_naming_entry_and_url(server, tmp_path):
    e = url_entry(server, "/nope.pth", None)
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    msg = str(err.value)
    assert msg == f"weights fetch toy: HTTP 404 Not Found for {server.url}/nope.pth"
    assert not list(tmp_path.iterdir())


def write_manifest(tmp_path: Path, entries: dict) -> Path:
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump({"entries": entries}))
    return p


def test_cli_fetch_and_list(server, tmp_path, monkeypatch, keep_logging):
    from lab.cli import app

    good, data = "/g/good.pth", state_dict_bytes(seed=5)
    server.files[good] = data
    man = write_manifest(tmp_path, {
        "good": {"url": server.url + good, "file": "good.pth", "sha256": hashlib.sha256(data).hexdigest()},
        "gone": {"url": server.url + "/missing.pth", "file": "missing.pth"},
    })
    monkeypatch.setenv("V2A_MANIFEST", str(man))
    wdir = tmp_path / "w"
    res = CliRunner().invoke(app, ["-c", str(tmp_path / "none.yaml"), "--no-progress", "weights", "list",
                                   "--dir", str(wdir)])
    assert res.exit_code == 0 and "good" in res.output and "missing" in res.output
    res = CliRunner().invoke(app, ["-c", str(tmp_path / "none.yaml"), "--no-progress", "weights", "fetch",
                                   "--dir", str(wdir)])
    assert res.exit_code == 1 and "failed: gone" in res.output
    assert (wdir / "good.pth").read_bytes() == data
    monkeypatch.setenv("V2A_WEIGHTS", str(wdir))  # the environment variable names the same folder
    res = CliRunner().invoke(app, ["-c", str(tmp_path / "none.yaml"), "weights", "list"])
    line = next(ln for ln in res.output.splitlines() if ln.startswith("good"))
    assert "verified" in line
    res = CliRunner().invoke(app, ["-c", str(tmp_path / "none.yaml"), "weights", "fetch", "typo"])
    assert res.exit_code == 2 and "unknown weight" in res.output


def test_hub_entry_through_hf_endpoint(server, tmp_path, monkeypatch):
    data = state_dict_bytes(seed=6)
    server.files["/owner/model/resolve/main/sub/w.pth"] = data
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    e = W.Entry(name="hubtoy", hub={"repo": "owner/model", "filename": "sub/w.pth", "revision": "main"},
                sha256=hashlib.sha256(data).hexdigest())
    assert W.local_path(e, tmp_path) is None
    what, path = W.fetch(e, tmp_path, progress=False)
    assert what == "downloaded" and path.read_bytes() == data
    assert str(path).startswith(str(tmp_path / "hf" / "hub")) and HUB_COMMIT in str(path)
    assert W.read_lock(tmp_path)["hubtoy"]["commit"] == HUB_COMMIT
    n = len(server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now found in the cache, without the network
    assert W.local_path(e, tmp_path) == path and W.fetch(e, tmp_path, progress=False)[0] == "already there"
    assert W.resolve("hubtoy", tmp_path, {"hubtoy": e}) == str(path)
    assert len(server.requests) == n


def test_hub_offline_fails_fast_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    e = W.load_manifest()["audioldm2"]
    t0 = time.time()
    with pytest.raises(W.WeightError) as err:
        W.fetch(e, tmp_path, progress=False)
    assert time.time() - t0 < 5
    assert str(err.value) == ("weights fetch audioldm2: hf://cvssp/audioldm2 is not in the local Hugging Face "
                              "cache and HF_HUB_OFFLINE=1 forbids downloading it")
    with pytest.raises(W.WeightError, match=r"run `v2a weights fetch audioldm2`"):
        W.resolve("audioldm2", tmp_path)
    assert W.resolve("some/local/path.pth", tmp_path) == "some/local/path.pth"


def test_repository_manifest_covers_stages_yaml():
    """Every checkpoint param of the full configuration names a manifest entry used by that stage; checksums
    are well-formed hex; url entries have a file name."""
    manifest = W.load_manifest()
    cfg = yaml.safe_load((REPO / "stages.yaml").read_text())
    named = set()
    for stage, body in cfg["stages"].items():
        for key in body.get("checkpoints", []):
            value = body["params"][key]
            assert value in manifest, f"stages.{stage}.params.{key}={value!r} is not a manifest entry"
            assert stage in manifest[value].used_by
            named.add(value)
    assert named == set(manifest), f"manifest entries no stage uses: {set(manifest) - named}"
    for e in manifest.values():
        assert e.what and e.reference and e.approx
        for algo, n in (("sha256", 64), ("md5", 32)):
            v = getattr(e, algo)
            assert v is None or (len(v) == n and int(v, 16) >= 0)
        assert e.kind != "url" or (e.file and e.url.startswith("https://"))
    assert manifest["synchformer"].md5 == "5b2f5594b0730f70e41e549b7c94390c"  # MMAudio's published MD5
