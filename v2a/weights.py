"""The weights manifest (``v2a/weights.yaml``): where every checkpoint of the full run comes from, whether it is
here, and ``fetch`` to download what is missing.

``url`` entries are downloaded into the weights folder (``weights_dir``) with a progress bar, resumed with an HTTP
``Range`` request after a dropped connection (v2a/transfer.py), and renamed to their final path only once proven
(``<file>.part`` until then): the transfer complete as the server announced it, the manifest's checksum when it
publishes one, and the file opening as what the entry says it is (v2a/weight_formats.py). Anything unproven is
kept aside as ``<file>.corrupt`` and the fetch fails; a file already at the final path is proven the same way
(and against the sha256 that ``weights.lock.json`` recorded) before it is called "already there". ``hub`` entries
go through huggingface_hub (its cache, HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE read when the call is made). Nothing here touches the network unless ``fetch`` is called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a import transfer
from v2a.io import InputError, atomic_write_bytes, atomic_write_json, safe_load
from v2a.manifest import (MANIFEST, Entry, WeightError, _hub_kwargs, _hub_local, hub_offline,  # noqa: F401
                          load_manifest, local_path, resolve, weights_dir)
from v2a.transfer import Refused, trusted_start
from v2a.weight_formats import FormatError, prove

log = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------ proofs and the lock


def file_digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def checksum_problem(e: Entry, path: Path, digests: dict[str, str] | None = None) -> str | None:
    """None when ``path`` matches every size/checksum the manifest knows, else why not."""
    if e.size is not None and path.stat().st_size != e.size:
        return f"size {path.stat().st_size} bytes, the manifest says {e.size}"
    if not e.published:
        return None
    d = digests or file_digests(path)
    if e.sha256 and d["sha256"] != e.sha256.lower():
        return f"sha256 {d['sha256']}, the manifest says {e.sha256}"
    if e.md5 and d["md5"] != e.md5.lower():
        return f"md5 {d['md5']}, the manifest says {e.md5}"
    if e.sha256_prefix and not d["sha256"].startswith(e.sha256_prefix.lower()):
        return f"sha256 {d['sha256']}, the manifest says it starts with {e.sha256_prefix}"
    return None


def prove_file(e: Entry, path: Path, *, transfer: str | None = None, lock: dict | None = None
               ) -> tuple[dict | None, str | None]:
    """(lock record, None) when ``path`` is proven to be ``e``'s file, else (None, why not). Proven = the manifest's
    size and checksum when it publishes one; without one, the file opens as what the entry says it is (v2a/
    weight_formats.py), or, for a format that cannot be checked, the transfer proof (``transfer``) or the lock
    record of such a proof. ``lock``: an earlier record whose sha256 the file must still have."""
    digests = file_digests(path)
    bad = checksum_problem(e, path, digests)
    if bad:
        return None, bad
    try:
        shape = prove(path, e.format_name)
    except FormatError as err:
        if not e.published:
            return None, str(err)
        log.warning("%s: %s matches the published checksum but %s", e.name, path, err)
        shape = ""
    if not e.published and lock and lock.get("sha256") and lock["sha256"] != digests["sha256"]:
        return None, f"sha256 {digests['sha256']}, the lock file recorded {lock['sha256']} when it was fetched"
    transfer = transfer or (lock or {}).get("transfer")
    if not (e.published or shape or transfer):
        return None, (f"nothing proves it complete: no published checksum, a format ({e.format_name}) that cannot "
                      "be checked, and no length announced by the server")
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests, "verified": e.published,
            "checked": shape or None, "transfer": transfer}, None


def read_lock(wdir: Path) -> dict:
    """The lock file ({entry name: record}); InputError (one line: the file, what is wrong, what is expected)."""
    p = wdir / LOCK_NAME
    if not p.is_file():
        return {}
    try:
        lock = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        lock, why = None, f"is not JSON ({err})"
    else:
        why = "is not a JSON object of {entry name: record}"
    if not isinstance(lock, dict) or not all(isinstance(v, dict) for v in lock.values()):
        raise InputError(f"weights lock file {p} {why}: expected the JSON object that `v2a weights fetch` writes, "
                         "{entry name: {sha256, size, ...}}; move it away and fetch again (the files already there "
                         "are checked and recorded anew)")
    return lock


def _record(wdir: Path, name: str, info: dict) -> None:
    lock = read_lock(wdir)
    lock[name] = info
    wdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(wdir / LOCK_NAME, lock)


def entry_state(e: Entry, wdir: Path, *, verify: bool = False) -> tuple[str, Path | None]:
    """("missing" | "present" | "checked" | "verified" | "corrupt: why", path). "verified": the published checksum
    matched, "checked": no checksum is published but the file was proven by its format or its transfer. Without
    ``verify`` a file whose size and mtime match the lock file's record of a proven fetch counts as proven; with
    it, the file is hashed and checked again (slow for GBs)."""
    p = local_path(e, wdir)
    if p is None:
        return "missing", None
    if not p.is_file():
        return "present", p
    rec = read_lock(wdir).get(e.name) or {}
    st = p.stat()
    proven = "verified" if rec.get("verified") else "checked" if rec.get("checked") or rec.get("transfer") else None
    if not verify:
        same = rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
        return (proven if proven and same else "present"), p
    got, bad = prove_file(e, p, lock=rec if proven else None)
    if bad:
        return f"corrupt: {bad}", p
    return ("verified" if got["verified"] else "checked"), p


# ------------------------------------------------------------------------------------------ download


def _keep_aside(path: Path, final: Path, body: bytes | None = None) -> Path:
    """Move ``path`` (or write ``body``) to the first free ``<final>.corrupt[.N]``; returns that path."""
    aside, n = final.with_name(final.name + ".corrupt"), 1
    while aside.exists():
        n += 1
        aside = final.with_name(f"{final.name}.corrupt.{n}")
    if body is not None:
        atomic_write_bytes(aside, body)
    else:
        os.replace(path, aside)
    return aside


def download_url(e: Entry, wdir: Path, *, progress: bool = True, retries: int = 3, timeout: float = 60.0,
                 replacing: str | None = None) -> Path:
    """Download ``e.url`` through ``<file>.part``, prove it (complete transfer, checksum or format), then rename it
    to ``wdir/e.file``; anything unproven is kept aside as ``<file>.corrupt``. ``replacing``: why the file already
    at the final path is not proven (it is kept aside only once the new one is)."""
    final = wdir / e.file
    part = final.with_name(final.name + ".part")
    wdir.mkdir(parents=True, exist_ok=True)
    read_lock(wdir)  # a broken lock file stops the fetch before anything is downloaded or named
    try:
        trusted_start(part, e.url)
    except Refused as r:
        aside = _keep_aside(part, final)
        transfer.record_path(part).unlink(missing_ok=True)
        log.warning("%s: %s; kept aside as %s, downloading from the start", e.name, r.reason, aside)
    try:
        sent = transfer.download(e.name, e.url, part, progress=progress, retries=retries, timeout=timeout)
    except transfer.TransferFailed as err:
        raise WeightError(f"weights fetch {e.name}: {err}") from None
    except ConnectionError as err:
        raise WeightError(f"weights fetch {e.name}: {err}; run `v2a weights fetch {e.name}` again to resume "
                          "(--timeout, --retries)") from None
    except Refused as r:  # the server's answer (body) or the .part itself cannot be trusted
        aside = None
        if r.body is not None or part.exists():
            aside = _keep_aside(part, final, r.body)
        if r.body is None:
            transfer.record_path(part).unlink(missing_ok=True)
        kept = f"kept aside as {aside}, " if aside else ""
        raise WeightError(f"weights fetch {e.name}: {r.reason}; {kept}{final} untouched") from None
    rec, bad = prove_file(e, part, transfer=sent.proof)
    if bad:
        aside = _keep_aside(part, final)
        transfer.record_path(part).unlink(missing_ok=True)
        raise WeightError(f"weights fetch {e.name}: the download from {e.url} does not verify ({bad}); "
                          f"kept aside as {aside}, {final} untouched")
    if replacing and final.exists():
        old = _keep_aside(final, final)
        log.warning("%s: the file that was at %s (%s) is kept aside as %s", e.name, final, replacing, old)
    os.replace(part, final)
    transfer.record_path(part).unlink(missing_ok=True)
    st = final.stat()
    _record(wdir, e.name, {"url": e.url, **rec, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return final


def download_hub(e: Entry, wdir: Path, *, progress: bool = True) -> Path:
    """hf_hub_download / snapshot_download at the entry's revision; records the resolved commit in the lock file."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    here = _hub_local(e)
    if here is not None:
        return here
    repo, rev = e.hub["repo"], e.hub.get("revision", "main")
    if hub_offline():
        raise WeightError(f"weights fetch {e.name}: hf://{repo} is not in the local Hugging Face cache and "
                          "HF_HUB_OFFLINE=1 forbids downloading it")
    (enable_progress_bars if progress else disable_progress_bars)()
    from huggingface_hub import constants

    was, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False  # read at import; this call is online
    try:
        if e.kind == "hub_file":
            got = Path(hf_hub_download(repo, e.hub["filename"], revision=rev, **_hub_kwargs()))
        else:
            got = Path(snapshot_download(repo, revision=rev, allow_patterns=e.hub.get("files"), **_hub_kwargs()))
    except Exception as err:  # huggingface_hub raises many types; one line names the entry and the repo
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightError(f"weights fetch {e.name}: hf://{repo}@{rev} could not be downloaded: {first}") from None
    finally:
        constants.HF_HUB_OFFLINE = was
    if got.is_file():
        _, bad = prove_file(e, got, transfer="huggingface_hub's own size check")
        if bad:
            raise WeightError(f"weights fetch {e.name}: hf://{repo} file {got} does not verify ({bad}); it is "
                              "in the Hugging Face cache, delete it there to download it again")
    parts = got.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
    _record(wdir, e.name, {"hub": repo, "revision": rev, "commit": commit, "path": str(got)})
    return got


def fetch(e: Entry, wdir: Path, *, progress: bool = True, retries: int = 3, timeout: float = 60.0
          ) -> tuple[str, Path]:
    """Make ``e`` present: ("already there" | "downloaded" | "downloaded, replacing ...", path). A file already at
    the final path is proven first (size, checksum, format, the lock file's sha256). Raises WeightError (one line)
    or InputError (a broken lock file, before anything is downloaded)."""
    lock = read_lock(wdir)  # a broken lock file stops here, before any download
    if e.kind != "url":
        here = _hub_local(e)
        return ("already there", here) if here is not None else ("downloaded", download_hub(e, wdir, progress=progress))
    final, why = wdir / e.file, None
    if final.is_file():
        rec = lock.get(e.name) or {}
        proven_before = rec.get("verified") or rec.get("checked") or rec.get("transfer")
        got, why = prove_file(e, final, lock=rec if proven_before else None)
        if not why:
            if got != {k: rec.get(k) for k in got}:
                _record(wdir, e.name, {"url": e.url, **got})
            return "already there", final
        log.warning("%s: %s is there but not proven (%s); downloading it again", e.name, final, why)
    path = download_url(e, wdir, progress=progress, retries=retries, timeout=timeout, replacing=why)
    return ("downloaded" if not why else f"downloaded, replacing a file that did not verify ({why})"), path


# ------------------------------------------------------------------------------------------ stage params
