"""The weights manifest (``v2a/weights.yaml``): what each checkpoint of the full run is, where the weights folder
is, and where an entry lies on this machine: everything a stage needs to turn a manifest name into a local path,
without any network call. Downloading (``fetch``) and proving files is v2a/weights.py; it stays out of the stages'
code fingerprints, so editing the downloader never makes a stage stale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.io import safe_load
from v2a.schema import from_known_keys

MANIFEST = Path(__file__).with_name("weights.yaml")
FORMATS = ("torch", "safetensors", "json", "unknown")
_BY_SUFFIX = {".pth": "torch", ".pt": "torch", ".ckpt": "torch", ".bin": "torch", ".safetensors": "safetensors",
              ".json": "json"}


def format_of(file_name: str, declared: str | None = None) -> str:
    """The entry's ``format`` field when set, else what the file name's suffix says (``unknown`` otherwise)."""
    if declared:
        return declared
    return _BY_SUFFIX.get(Path(file_name.split("?")[0]).suffix.lower(), "unknown")


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
    format: str | None = None  # torch | safetensors | json | unknown; default: from the file name (weight_formats)

    @property
    def published(self) -> bool:
        """The manifest knows a checksum of this file."""
        return bool(self.sha256 or self.md5 or self.sha256_prefix)

    @property
    def format_name(self) -> str:
        return format_of(self.file or self.hub.get("filename") or "", self.format)

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
        if e.format is not None and e.format not in FORMATS:
            raise ValueError(f"{path}: entry {name}: format {e.format!r} is not one of {', '.join(FORMATS)}")
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
