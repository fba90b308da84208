"""The weights manifest (``v2a/weights.yaml``): where every checkpoint of the full run comes from, whether it is
here, and ``fetch`` to download what is missing.

``url`` entries are downloaded into the weights folder (``weights_dir``) with a progress bar, resumed with an HTTP
``Range`` request after a dropped connection, verified against the manifest's checksum and only then renamed to
their final path (``<file>.part`` until then; a file that fails verification is kept aside as
``<file>.corrupt``). ``hub`` entries go through huggingface_hub (its cache, HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE
read when the call is made). Nothing here touches the network unless ``fetch`` is called.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.io import safe_load
from v2a.schema import from_known_keys

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("weights.yaml")
LOCK_NAME = "weights.lock.json"
CHUNK = 1 << 20


class WeightError(RuntimeError):
    """A weight is missing, cannot be downloaded or does not verify; the message is one line a user can act on."""


@dataclass(frozen=True)
class Entry:
    name: str
    what: str = ""
    used_by: tuple[str, ...] = ()
    url: str | None = None
    file: str | None = None  # url entries: the file name in the weights folder
    hub: dict[str, Any] = field(default_factory=dict)  # repo, revision, and filename (one file) or files (folder)
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    md5: str | None = None
    approx: str = ""
    reference: str = ""

    @property
    def kind(self) -> str:
        if self.url:
            return "url"
        return "hub_file" if self.hub.get("filename") else "hub_folder"

    @property
    def source(self) -> str:
        if self.url:
            return self.url
        what = self.hub.get("filename") or ", ".join(self.hub.get("files") or ["(whole repository)"])
        return f"hf://{self.hub['repo']}@{self.hub.get('revision', 'main')}: {what}"

    @property
    def checksum(self) -> str:
        for algo in ("sha256", "md5", "sha256_prefix"):
            if getattr(self, algo):
                return f"{algo} {getattr(self, algo)}"
        return "unknown"


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Entry]:
    """The manifest: ``path``, else $V2A_MANIFEST (a private mirror's list), else v2a/weights.yaml."""
    path = path or os.environ.get("V2A_MANIFEST") or MANIFEST
    with open(path, encoding="utf-8") as fh:
        raw = safe_load(fh) or {}
    out = {}
    for name, body in (raw.get("entries") or {}).items():
        body = dict(body or {})
        body["used_by"] = tuple(body.get("used_by") or ())
        e = from_known_keys(Entry, body, f"{path}: entry {name}", name=name)
        if bool(e.url) == bool(e.hub) or (e.url and not e.file) or (e.hub and not e.hub.get("repo")):
            raise ValueError(f"{path}: entry {name} needs either url + file or hub.repo")
        out[name] = e
    return out


def weights_dir(cfg=None, override: str | os.PathLike | None = None) -> Path:
    """The folder of ``url`` entries: ``override`` (``--dir``), else V2A_WEIGHTS, else ``paths.weights`` of the
    configuration, else ``weights/`` beside the first config file (or the working folder)."""
    if override:
        return Path(override).expanduser().resolve()
    if os.environ.get("V2A_WEIGHTS"):
        return Path(os.environ["V2A_WEIGHTS"]).expanduser().resolve()
    if cfg is not None and cfg.paths.get("weights"):
        return cfg.path("weights")
    return (cfg.root if cfg is not None else Path.cwd()) / "weights"


# ------------------------------------------------------------------------------------------ hub (no network here)


def _hub_kwargs() -> dict[str, Any]:
    """HF_HUB_CACHE / HF_HOME / HF_ENDPOINT as they are now (huggingface_hub reads them once, at import)."""
    kw: dict[str, Any] = {}
    if os.environ.get("HF_HUB_CACHE"):
        kw["cache_dir"] = os.environ["HF_HUB_CACHE"]
    elif os.environ.get("HF_HOME"):
        kw["cache_dir"] = str(Path(os.environ["HF_HOME"]) / "hub")
    if os.environ.get("HF_ENDPOINT"):
        kw["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")
    return kw


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_local(e: Entry) -> Path | None:
    """The cached file (hub_file) or snapshot folder (hub_folder), without any network call."""
    from huggingface_hub import try_to_load_from_cache

    kw = _hub_kwargs()
    kw.pop("endpoint", None)
    rev = e.hub.get("revision", "main")
    names = [e.hub["filename"]] if e.kind == "hub_file" else list(e.hub.get("files") or ["model_index.json"])
    found = []
    for n in names:
        got = try_to_load_from_cache(e.hub["repo"], n, revision=rev, **kw)
        if not isinstance(got, str):
            return None
        found.append(Path(got))
    if e.kind == "hub_file":
        return found[0]
    snap = found[0].parent
    for _ in Path(names[0]).parts[1:]:
        snap = snap.parent
    return snap


def local_path(e: Entry, wdir: Path) -> Path | None:
    """Where the entry lies on this machine, or None. Never touches the network."""
    if e.kind == "url":
        p = wdir / e.file
        return p if p.is_file() else None
    return _hub_local(e)


# ------------------------------------------------------------------------------------------ checksums


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
    if not (e.sha256 or e.md5 or e.sha256_prefix):
        return None
    d = digests or file_digests(path)
    if e.sha256 and d["sha256"] != e.sha256.lower():
        return f"sha256 {d['sha256']}, the manifest says {e.sha256}"
    if e.md5 and d["md5"] != e.md5.lower():
        return f"md5 {d['md5']}, the manifest says {e.md5}"
    if e.sha256_prefix and not d["sha256"].startswith(e.sha256_prefix.lower()):
        return f"sha256 {d['sha256']}, the manifest says it starts with {e.sha256_prefix}"
    return None


def read_lock(wdir: Path) -> dict:
    p = wdir / LOCK_NAME
    return json.loads(p.read_text()) if p.is_file() else {}


def _record(wdir: Path, name: str, info: dict) -> None:
    from v2a.io import atomic_write_json

    lock = read_lock(wdir)
    lock[name] = info
    wdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(wdir / LOCK_NAME, lock)


def entry_state(e: Entry, wdir: Path, *, verify: bool = False) -> tuple[str, Path | None]:
    """("missing" | "present" | "verified" | "corrupt: why", path). Verification hashes the file (slow for GBs);
    a file whose size and mtime match the lock file's record of a verified fetch counts as verified."""
    p = local_path(e, wdir)
    if p is None:
        return "missing", None
    if not p.is_file():
        return "present", p
    rec = read_lock(wdir).get(e.name) or {}
    st = p.stat()
    if rec.get("verified") and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return "verified", p
    if not verify:
        return "present", p
    bad = checksum_problem(e, p)
    if bad:
        return f"corrupt: {bad}", p
    return ("verified" if (e.sha256 or e.md5 or e.sha256_prefix) else "present"), p


# ------------------------------------------------------------------------------------------ download


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "mfm-mapper-weights/1", "Accept-Encoding": "identity"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _download_once(name: str, url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (a 206 answer resumes it, a 200 answer restarts it)."""
    from tqdm import tqdm

    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is already complete
            return
        raise WeightError(f"weights fetch {name}: HTTP {err.code} {err.reason} for {url}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WeightError(f"weights fetch {name}: cannot reach {url} ({reason})") from None
    with resp:
        if start and resp.status != 206:
            log.info("%s: the server ignored the Range request; starting over", name)
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        mode = "ab" if start else "wb"
        with open(part, mode) as fh, tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name,
                                          disable=not progress, leave=False) as bar:
            got = 0
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                got += len(block)
                bar.update(len(block))
        if length is not None and got < int(length):
            raise ConnectionError(f"connection closed after {start + got} of {total} bytes")


def download_url(e: Entry, wdir: Path, *, progress: bool = True, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``e.url`` to ``wdir/e.file`` through ``<file>.part``; verify; rename. Returns the final path."""
    final = wdir / e.file
    part = final.with_name(final.name + ".part")
    wdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _download_once(e.name, e.url, part, progress=progress, timeout=timeout)
            break
        except (OSError, http.client.HTTPException) as err:  # a dropped connection, a read timeout
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise WeightError(f"weights fetch {e.name}: download from {e.url} interrupted at {have} bytes "
                                  f"({err}); run `v2a weights fetch {e.name}` again to resume") from None
            log.warning("%s: %s; resuming from byte %d", e.name, err, have)
    digests = file_digests(part)
    bad = checksum_problem(e, part, digests)
    if bad:
        aside = final.with_name(final.name + ".corrupt")
        os.replace(part, aside)
        raise WeightError(f"weights fetch {e.name}: the download from {e.url} does not verify ({bad}); "
                          f"kept aside as {aside}, {final} untouched")
    os.replace(part, final)
    st = final.stat()
    _record(wdir, e.name, {"url": e.url, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests,
                           "verified": bool(e.sha256 or e.md5 or e.sha256_prefix)})
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
        bad = checksum_problem(e, got)
        if bad:
            raise WeightError(f"weights fetch {e.name}: hf://{repo} file {got} does not verify ({bad})")
    parts = got.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
    _record(wdir, e.name, {"hub": repo, "revision": rev, "commit": commit, "path": str(got)})
    return got


def fetch(e: Entry, wdir: Path, *, progress: bool = True, retries: int = 3) -> tuple[str, Path]:
    """Make ``e`` present: ("already there" | "downloaded", path). Raises WeightError with one line."""
    state, p = entry_state(e, wdir)
    if p is not None and not state.startswith("corrupt"):
        return "already there", p
    if e.kind == "url":
        return "downloaded", download_url(e, wdir, progress=progress, retries=retries)
    return "downloaded", download_hub(e, wdir, progress=progress)


# ------------------------------------------------------------------------------------------ stage params


def resolve(value: Any, wdir: Path, manifest: dict[str, Entry] | None = None) -> Any:
    """A stage's checkpoint param: a manifest name -> its local path (str); anything else unchanged (a local path,
    a hub id, ``None``, ``tiny``). A manifest name whose file is missing raises WeightError naming the fetch."""
    manifest = load_manifest() if manifest is None else manifest
    if not isinstance(value, str) or value not in manifest:
        return value
    p = local_path(manifest[value], wdir)
    if p is None:
        raise WeightError(f"weight {value!r} ({manifest[value].source}) is missing: run `v2a weights fetch {value}`")
    return str(p)
