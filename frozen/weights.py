"""Weights of the frozen networks: read a checkpoint safely, resolve a local path or hub file, unwrap nestings
and prefixes, load with every key and shape checked, and seed tiny random models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


def report_load(name: str, missing: list[str], unexpected: list[str], *, allow_missing: tuple[str, ...] = ()) -> None:
    """Log unexpected keys, raise on missing ones (other than ``allow_missing`` prefixes)."""
    if unexpected:
        log.info("%s: %d unexpected checkpoint keys ignored (e.g. %s)", name, len(unexpected), unexpected[:5])
    real_missing = [k for k in missing if not k.startswith(allow_missing)] if allow_missing else list(missing)
    if real_missing:
        raise RuntimeError(
            f"{name}: the checkpoint lacks {len(real_missing)} weights the model needs, e.g. {real_missing[:8]}; "
            "is this the right file?"
        )


WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def read_weights(path: str | Path, what: str):
    """Read a checkpoint without executing anything from it: safetensors, or ``torch.load(weights_only=True)``
    (memory-mapped when the file allows it, so multi-GB files that we only partly use stay cheap)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint {str(path)!r} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files
    except Exception as err:  # unpickling arbitrary objects is refused on purpose
        raise RuntimeError(
            f"{what} checkpoint {str(path)!r} could not be read with torch.load(weights_only=True): {err}. "
            "If it holds non-tensor Python objects, convert its tensors to .safetensors once in a trusted "
            "environment and point the config at that file."
        ) from err


def resolve_weights(ref: str, *, what: str, filename: str | None = None,
                    revision: str | None = None) -> tuple[Path, dict]:
    """A local file, or a hub file (``owner/repo`` + ``filename``, or ``owner/repo/path/in/repo``) fetched with
    ``hf_hub_download`` only when ``ref`` is not a local path. Returns the path and the identity for the cache."""
    from v2a.io import file_identity

    ref = str(ref)
    local = Path(ref).expanduser()
    if local.is_file():
        return local, file_identity(local)
    parts = ref.split("/")
    looks_local = ref.startswith(("/", ".", "~")) or (len(parts) < 3 and local.suffix in WEIGHT_SUFFIXES)
    if looks_local or len(parts) < 2 or (len(parts) == 2 and not filename):
        raise FileNotFoundError(f"{what} {ref!r} is neither an existing file nor a hub reference "
                                "'owner/repo' (+ filename) or 'owner/repo/file'")
    from huggingface_hub import hf_hub_download

    repo, name = "/".join(parts[:2]), "/".join(parts[2:]) or filename
    try:
        got = Path(hf_hub_download(repo_id=repo, filename=name, revision=revision))
    except Exception as err:  # a mistyped relative path also lands here: say both readings
        raise FileNotFoundError(
            f"{what} {ref!r} is not a local file, and as hub file {repo}:{name} it could not be fetched: {err}"
        ) from err
    return got, {"hub_repo": repo, "filename": name, "revision": revision, **file_identity(got)}


def load_checked(name: str, model: torch.nn.Module, state: dict[str, torch.Tensor], **kw) -> None:
    """Load ``state`` with every key checked: missing keys raise, unexpected ones are logged, shapes must match."""
    result = model.load_state_dict(state, strict=False)
    report_load(name, list(result.missing_keys), list(result.unexpected_keys), **kw)


def unwrap_state_dict(obj, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a state dict")
    out = {}
    for k, v in obj.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def key_mismatch(own: dict, sd: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of a checkpoint ``sd`` against a module's ``own`` state dict."""
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    return missing, unexpected, bad_shape


def load_checkpoint(module: nn.Module, path: str | Path, *, prefixes: tuple[str, ...] = ("module.",),
                    ignore: tuple[str, ...] = ()) -> None:
    """Load ``path`` into ``module`` strictly; keys starting with an ``ignore`` prefix are dropped (and logged)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; set its path in stages.yaml (evaluate.params)")
    sd = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), prefixes)
    dropped = [k for k in sd if k.startswith(ignore)] if ignore else []
    for k in dropped:
        sd.pop(k)
    if dropped:
        log.info("%s: ignored %d checkpoint keys (%s...)", path.name, len(dropped), dropped[0])
    missing, unexpected, bad_shape = key_mismatch(module.state_dict(), sd)
    if missing or unexpected or bad_shape:
        raise RuntimeError(
            f"checkpoint {path} does not match {type(module).__name__}: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)}), wrong shape {bad_shape[:8]} ({len(bad_shape)})")
    module.load_state_dict(sd, strict=True)


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(gen_state)
