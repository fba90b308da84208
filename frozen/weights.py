"""Weights of the frozen networks, in one place: read a checkpoint safely, resolve a local path or a hub file,
unwrap nestings and prefixes, load with every key and shape checked, and seed tiny random models.

    read_weights(path, what)             -> the object in the file (safetensors, or torch.load weights_only + mmap)
    resolve_weights(ref, what=...)       -> (local path, identity): a local file or a hub file (hf_hub_download)
    unwrap(obj, source=...)              -> flat {name: tensor}: ``["model"]``/``["state_dict"]`` nestings descended,
                                            ``module.``-style prefixes stripped, optionally only the keys ``under``
                                            a prefix (e.g. AudioLDM-2's ``cond_stage_models...audiomae.model.``)
    load_checked(model, state, source=...) -> LoadReport: missing or wrong-shaped keys raise (naming the file and the
                                            keys); keys under a model's ignorable prefixes are logged at INFO and
                                            dropped; other unexpected keys are logged at WARNING, dropped and
                                            returned, or raise with ``unexpected="raise"``
    load_checkpoint(model, path, ...)    -> read + unwrap + load_checked
    seeded(build, seed, perturb=0.0)     -> a model built under a temporarily seeded global RNG (restored after)
    init_tiny_(model, seed, rule)        -> every floating tensor redrawn from a private generator by a model's rule
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
NESTINGS = ("model", "state_dict")  # Lightning / DDP / released-training wrappers around the state dict


# ----------------------------------------------------------------------------------------------- reading


def read_weights(path: str | Path, what: str, *, hint: str = ""):
    """Read a checkpoint without executing anything from it: safetensors, or ``torch.load(weights_only=True)``
    (memory-mapped when the file allows it, so multi-GB files that we only partly use stay cheap)."""
    path = Path(path).expanduser()
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
            + (hint or "If it holds non-tensor Python objects, convert its tensors to .safetensors once in a "
               "trusted environment and point the config at that file.")
        ) from err


def resolve_weights(ref: str, *, what: str, filename: str | None = None,
                    revision: str | None = None) -> tuple[Path, dict]:
    """A weights-manifest name (v2a/weights.yaml), a local file, or a hub file (``owner/repo`` + ``filename``, or
    ``owner/repo/path/in/repo``) fetched with ``hf_hub_download`` only when ``ref`` is not a local path.
    Returns the path and the identity for the cache."""
    from v2a.io import file_identity
    from v2a.manifest import load_manifest, resolve, weights_dir

    ref = str(ref)
    manifest = load_manifest()
    if ref in manifest:  # a weights-manifest name (the runner resolves these first; this serves direct callers)
        ref = resolve(ref, weights_dir(), manifest)
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


def unwrap(obj, *, source: str, nestings: tuple[str, ...] = NESTINGS, strip: tuple[str, ...] = ("module.",),
           under: str = "") -> dict[str, torch.Tensor]:
    """The flat tensor dict inside a checkpoint object.

    Descends ``obj[n]`` for every nesting ``n`` found (in that order, repeatedly), drops non-tensor entries,
    strips each ``strip`` prefix in turn (``("module.", "net.")`` turns ``module.net.x`` into ``x``), and with
    ``under`` keeps only the keys below that prefix, relative to it (the other entries belong to other models).
    """
    while isinstance(obj, dict):
        inner = next((obj[n] for n in nestings if isinstance(obj.get(n), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise RuntimeError(f"{source} holds a {type(obj).__name__}, not a state dict")
    state, others = {}, 0
    for key, value in obj.items():
        for p in strip:
            if key.startswith(p):
                key = key[len(p):]
        if not isinstance(value, torch.Tensor) or not key.startswith(under):
            others += 1
            continue
        state[key[len(under):]] = value
    if others:
        what = f"outside {under!r} or non-tensor" if under else "non-tensor"
        log.info("%s: %d entries %s skipped", source, others, what)
    return state


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What a checked load did with the checkpoint's keys (all lists sorted)."""

    missing: list[str] = field(default_factory=list)  # allowed-missing model keys left as they were
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks (dropped)
    ignored: list[str] = field(default_factory=list)  # checkpoint keys under the model's ignorable prefixes


def check_keys(own: dict, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of a checkpoint ``state`` against a module's ``own`` state dict."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return missing, unexpected, bad_shape


def _mismatch_error(source: str, name: str, missing: list[str], unexpected: list[str], bad: list[str],
                    own: dict, state: dict) -> RuntimeError:
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:4]]
    return RuntimeError(
        f"{source} does not match {name}: missing {missing[:8]} ({len(missing)}), "
        f"wrong shape {bad[:8]} ({len(bad)}{': ' + '; '.join(shapes) if shapes else ''}), "
        f"unexpected {unexpected[:8]} ({len(unexpected)}); is this the right file?")


def check_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, ignore: tuple[str, ...] = (),
                ignore_why: str = "ignorable", allow_missing: tuple[str, ...] = (),
                unexpected: str = "report") -> tuple[dict, LoadReport]:
    """Check ``state`` against ``model`` (see :func:`load_checked`) without loading; returns the entries to load.
    ``allow_missing`` prefixes (``("",)``: any key, for a partial file) may be absent."""
    if unexpected not in ("report", "raise"):
        raise ValueError(f"unexpected must be 'report' or 'raise', got {unexpected!r}")
    own = model.state_dict()
    name = type(model).__name__
    missing, extra, bad = check_keys(own, state)
    ignored = [k for k in extra if k.startswith(ignore)] if ignore else []
    extra = [k for k in extra if k not in set(ignored)]
    real_missing = [k for k in missing if not (allow_missing and k.startswith(allow_missing))]
    if real_missing or bad or (extra and unexpected == "raise"):
        raise _mismatch_error(source, name, real_missing, extra, bad, own, state)
    if ignored:
        log.info("%s: %d checkpoint keys dropped (%s), e.g. %s", source, len(ignored), ignore_why, ignored[:3])
    if extra:
        log.warning("%s: %d unexpected checkpoint keys dropped (%s has no such weights): %s", source, len(extra),
                    name, extra[:8])
    drop = set(ignored) | set(extra)
    return {k: v for k, v in state.items() if k not in drop}, LoadReport(missing, extra, ignored)


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, **checks) -> LoadReport:
    """Load ``state`` into ``model`` with every key checked.

    Missing keys (other than ``allow_missing`` prefixes) and wrong shapes raise a RuntimeError naming ``source``
    and the keys; keys under ``ignore`` prefixes are logged (INFO, with the reason ``ignore_why``) and dropped;
    other unexpected keys are logged (WARNING), dropped and returned in the report, or raise when
    ``unexpected="raise"``. A model built on the meta device receives the checkpoint tensors themselves
    (``assign``), cast to the model's floating dtypes; it must then get every key.
    """
    to_load, report = check_state(model, state, source=source, **checks)
    own = model.state_dict()
    on_meta = any(t.is_meta for t in own.values())
    if on_meta and report.missing:
        raise RuntimeError(f"{source}: {type(model).__name__} is on the meta device, so every key must be loaded; "
                           f"missing {report.missing[:8]} ({len(report.missing)})")
    if on_meta:
        to_load = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in to_load.items()}
    model.load_state_dict(to_load, strict=not report.missing, assign=on_meta)
    return report


def load_checkpoint(model: nn.Module, path: str | Path, *, what: str | None = None,
                    strip: tuple[str, ...] = ("module.",), under: str = "", **checks) -> LoadReport:
    """Read ``path`` (:func:`read_weights`), unwrap it (:func:`unwrap`) and load it (:func:`load_checked`, whose
    keyword arguments ``ignore``/``ignore_why``/``allow_missing``/``unexpected`` pass through)."""
    what = what or type(model).__name__
    obj = read_weights(path, what)
    source = f"{what} checkpoint {str(path)!r}"
    return load_checked(model, unwrap(obj, source=source, strip=strip, under=under), source=source, **checks)


# ----------------------------------------------------------------------------------------------- tiny models


def _is_norm_or_bias(name: str) -> bool:
    return name.endswith("bias") or "norm" in name


def seeded(build: Callable[[], nn.Module], seed: int, *, perturb: float = 0.0,
           which: Callable[[str], bool] = _is_norm_or_bias) -> nn.Module:
    """``build()`` with the global torch RNG seeded with ``seed``; the RNG state is restored afterwards, so the
    caller's random stream is untouched. ``perturb > 0`` then adds ``perturb * randn`` (same stream) to every
    parameter ``which(name)`` selects (default: biases and norms), so that those are not all zeros and ones and a
    wrong parameter mapping shows in the outputs."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        model = build()
        with torch.no_grad():
            for name, p in model.named_parameters() if perturb else ():
                if which(name):
                    p.add_(perturb * torch.randn_like(p))
        return model
    finally:
        torch.random.set_rng_state(state)


InitRule = Callable[[str, nn.Module, torch.Tensor, Callable[[str], torch.Tensor]], torch.Tensor]


@torch.no_grad()
def init_tiny_(model: nn.Module, seed: int, rule: InitRule) -> nn.Module:
    """Redraw every floating parameter and persistent buffer, in ``state_dict`` order, from a private generator
    seeded with ``seed`` (the global RNG is not used). ``rule(name, owner_module, tensor, draw)`` returns the new
    value; ``draw("randn")`` / ``draw("rand")`` give float32 noise of the tensor's shape from the generator."""
    g = torch.Generator().manual_seed(int(seed))
    for mod_name, module in model.named_modules():
        local = list(module.named_parameters(recurse=False))
        local += [(n, b) for n, b in module.named_buffers(recurse=False)
                  if n not in module._non_persistent_buffers_set]
        for name, t in local:
            if not t.is_floating_point():
                continue
            draw = lambda kind, t=t: getattr(torch, kind)(t.shape, generator=g, dtype=torch.float32)  # noqa: E731
            t.copy_(rule(f"{mod_name}.{name}" if mod_name else name, module, t, draw))
    return model


# ------------------------------------------------------------------------------------------ preflight helpers


def existing_file(value) -> Path | None:
    """``value`` as a Path when it names an existing file, else None (a hub id, a missing path, None, 'tiny')."""
    if not isinstance(value, (str, Path)) or not str(value):
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_file() else None


def meta_state(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the model ``build()`` makes, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a file without reading its data: safetensors header, or a memory-mapped
    ``torch.load(weights_only=True)`` (nested ``model``/``state_dict`` dicts are flattened with dots)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return _flat_shapes(read_weights(path, path.name))


def _flat_shapes(obj, prefix: str = "") -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(obj, torch.Tensor):
        return {prefix[:-1]: tuple(obj.shape)}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_shapes(v, f"{prefix}{k}."))
    return out


def shape_problems(what: str, own: dict[str, tuple], ckpt: dict[str, tuple], *, unexpected_ok: bool = True,
                   shape_ok: tuple[str, ...] = ()) -> list[str]:
    """One line per kind of mismatch between a model's shapes ``own`` and a checkpoint's ``ckpt``."""
    missing = sorted(k for k in own if k not in ckpt and not k.endswith("position_ids"))
    unexpected = sorted(set(ckpt) - set(own))
    bad = sorted(k for k in set(own) & set(ckpt) if tuple(own[k]) != tuple(ckpt[k]) and k not in shape_ok)
    out = []
    if missing:
        out.append(f"{what}: {len(missing)} of the model's {len(own)} weights are missing, e.g. {missing[:3]}")
    if bad:
        k = bad[0]
        out.append(f"{what}: {len(bad)} weights have the wrong shape, e.g. {k} {tuple(ckpt[k])} "
                   f"where the model has {tuple(own[k])}")
    if unexpected and not unexpected_ok:
        out.append(f"{what}: {len(unexpected)} unexpected weights, e.g. {unexpected[:3]}")
    return out


def half_problem(what: str, params: dict, device: str) -> list[str]:
    if params.get("half") and not str(device).startswith("cuda"):
        return [f"{what}: half=true needs a CUDA device, the stage would run on {device!r}; set half: false"]
    return []


def shapes_of(sd: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}
