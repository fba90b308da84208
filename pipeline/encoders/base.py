"""The contract every frozen encoder fulfils, so that one cache stage can run any of them.

An encoder module (``cavp.py``, ``timechat.py``, ``audiomae.py``) exposes

    build(params: dict, device: str = "cpu") -> FrozenEncoder

where ``params`` is the stage's ``params`` mapping from ``stages.yaml`` (``model: full|tiny``, checkpoint
paths or hub ids, seeds, sizes, ``half: bool``...).  The returned object is in eval mode with
``requires_grad`` off and runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class EncoderInfo:
    """What the cache records about an encoder (zarr attributes)."""

    name: str  # "cavp" | "timechat" | "audiomae"
    input_kind: str  # "frames" | "audio"
    output_shape: tuple[int, ...]  # per clip, e.g. (40, 512)
    config: dict = field(default_factory=dict)  # the module config actually built (sizes)
    checkpoint: dict = field(default_factory=dict)  # identity of the weights: files (path/size/mtime), hub ids, or tiny seed


class FrozenEncoder(Protocol):
    info: EncoderInfo

    def encode(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode one batch.

        frames encoders: ``batch`` (B, 40, 224, 224, 3) uint8 RGB, ``lengths`` (B,) real frame counts.
        audio encoders:  ``batch`` (B, 160000) float32 16 kHz mono, ``lengths`` (B,) real sample counts.
        Returns (B, *info.output_shape) float32 on CPU.
        """
        ...


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: the encoders are never trained here."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def report_load(name: str, missing: list[str], unexpected: list[str], *, allow_missing: tuple[str, ...] = ()) -> None:
    """Log unexpected keys, raise on missing ones (other than ``allow_missing`` prefixes)."""
    import logging

    log = logging.getLogger(__name__)
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
