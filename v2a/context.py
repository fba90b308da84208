"""What the runner and the preflight share about one stage: the identity of its inputs and checkpoints, its
fingerprint, the context its ``run(ctx)`` receives, and its module (see v2a/runner.py for when a stage is fresh).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.code import code_identity
from v2a.config import Config, StageSpec
from v2a.dist import placement
from v2a.io import sha256_json
from v2a.schema import with_values



def path_identity(p: Path) -> Any:
    """Identity of an input or checkpoint: a file's name/size/mtime, or the listing of a folder's files.

    Absolute locations are left out on purpose: moving a project (or its weights) keeps its cache fresh.
    """
    if p.is_file():
        st = p.stat()
        return {"name": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        entries = []
        for f in sorted(p.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                st = f.stat()
                entries.append((str(f.relative_to(p)), st.st_size, st.st_mtime_ns))
        return {"listing": sha256_json(entries), "files": len(entries)}
    return {"missing": str(p)}


def resolved_params(spec: StageSpec, cfg: Config, *, strict: bool = True) -> dict[str, Any]:
    """``spec.params`` with every checkpoint param that names a weights-manifest entry (v2a/weights.yaml) replaced
    by its local path, and relative paths that exist under the config root made absolute. A missing manifest
    entry raises WeightError (``strict``) or is left as its name."""
    from v2a.manifest import WeightError, load_manifest, resolve, weights_dir

    if not spec.checkpoints or spec.params.get("model") == "tiny":  # tiny models load no checkpoint
        return spec.params
    manifest, wdir, out = load_manifest(), weights_dir(cfg), dict(spec.params)
    for key in spec.checkpoints:
        value = out.get(key)
        if value in (None, ""):  # names no checkpoint (not the config root that "" would resolve to)
            continue
        if isinstance(value, str) and value not in manifest and not Path(value).is_absolute() \
                and (cfg.root / value).exists():
            out[key] = str(cfg.root / value)
            continue
        try:
            out[key] = resolve(value, wdir, manifest)
        except WeightError:
            if strict:
                raise
    return out


def stage_settings(cfg: Config, name: str, *, strict: bool = True) -> Any:
    """Stage ``name``'s validated ``Params`` instance with its checkpoint params resolved (:func:`resolved_params`);
    the plain mapping for a stage module without a model."""
    spec = cfg.stage(name)
    plain = resolved_params(spec, cfg, strict=strict)
    typed = spec.settings
    if typed is None or isinstance(typed, dict):
        return plain
    return with_values(typed, **{k: plain[k] for k in spec.checkpoints if plain.get(k) != spec.params.get(k)})


def checkpoint_identity(spec: StageSpec, cfg: Config) -> dict:
    """Identity of the weights a stage loads: files by path/size/mtime, hub ids and missing manifest entries by
    name, tiny by seed."""
    out: dict[str, Any] = {}
    params = resolved_params(spec, cfg, strict=False)
    if params.get("model") == "tiny":
        return {"tiny_seed": params.get("seed", 0)}
    for key in spec.checkpoints:
        value = params.get(key)
        if value in (None, ""):
            out[key] = None
            continue
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else cfg.root / p
        out[key] = path_identity(p) if p.exists() else {"hub": str(value)}
    return out


def input_problems(cfg: Config, stage: str, key: str) -> list[str]:
    """An input under ``paths`` that is set but missing or empty (unset, null, means optional: not a problem)."""
    p = cfg.optional_path(key)
    if p is None:
        return []
    if not p.exists():
        return [f"paths.{key}: {p} does not exist (input of stage {stage})"]
    if p.is_file() and p.stat().st_size == 0:
        return [f"paths.{key}: {p} is an empty file (input of stage {stage})"]
    if p.is_dir() and next((f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")), None) is None:
        return [f"paths.{key}: {p} holds no files (input of stage {stage})"]
    return []


@dataclass
class Fingerprint:
    components: dict[str, Any]

    @property
    def value(self) -> str:
        return sha256_json(self.components)[:16]

    def diff(self, recorded: dict | None) -> list[str]:
        """Why a recorded fingerprint differs from this one, in words a user can act on."""
        if not recorded:
            return ["never run"]
        old = recorded.get("components") or {}
        reasons = []
        if old.get("params") != self.components.get("params"):
            reasons.append("params changed")
        if old.get("code") != self.components.get("code"):
            reasons.append(_code_change(old.get("code"), self.components.get("code")))
        if old.get("checkpoint") != self.components.get("checkpoint"):
            reasons.append("checkpoint changed")
        old_in, new_in = old.get("inputs") or {}, self.components.get("inputs") or {}
        for name in sorted(set(old_in) | set(new_in)):
            if old_in.get(name) != new_in.get(name):
                reasons.append(f"input {name} changed")
        if not reasons and recorded.get("fingerprint") != self.value:
            reasons.append("fingerprint changed")
        return reasons


def _code_change(old, new) -> str:
    """'code changed (frozen/cavp.py, ...)': the files added, removed or edited since the recorded run."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "code changed"
    files = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"code changed ({shown})"


@dataclass
class StageContext:
    cfg: Config
    spec: StageSpec
    fingerprint: Fingerprint
    force: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int = 1
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    _resolved: Any = field(default=None, repr=False)
    strict: bool = True  # a checkpoint name missing from the weights manifest raises (False: the preflight's view)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def params(self) -> Any:
        """The stage's validated ``Params`` instance (v2a/schema.py), weights-manifest names of its checkpoint params
        resolved to local paths (v2a/weights.yaml); the plain mapping for a stage module without a model."""
        if self._resolved is None:
            self._resolved = stage_settings(self.cfg, self.name, strict=self.strict)
        return self._resolved

    def uses(self, name: str) -> Any:
        """The resolved settings of a stage listed in this stage's ``uses`` (part of this stage's fingerprint)."""
        if name not in self.spec.uses:
            raise KeyError(f"stage {self.name} reads the settings of {name}, which its `uses` does not list")
        return stage_settings(self.cfg, name, strict=self.strict)

    @property
    def runtime(self) -> Any:
        """The stage's validated ``Runtime`` instance (not fingerprinted: devices, batch sizes, workers)."""
        return self.spec.options if self.spec.options is not None else self.spec.runtime

    def record(self, **extra: Any) -> dict:
        """The record a stage writes with its output when it completes."""
        return {
            "stage": self.name,
            "fingerprint": self.fingerprint.value,
            "components": self.fingerprint.components,
            "complete": True,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }


class PreflightError(RuntimeError):
    """The preflight found problems (the message is their table)."""


def stage_module(spec: StageSpec):
    try:
        return importlib.import_module(spec.module)
    except ImportError as e:
        raise RuntimeError(f"stage {spec.name}: cannot import its module {spec.module}: {e}") from e


class Stages:
    """Fingerprints and contexts of the configured stages (computed once per instance, upstream first)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._fp: dict[str, Fingerprint] = {}

    def fingerprint(self, name: str) -> Fingerprint:
        if name in self._fp:
            return self._fp[name]
        spec = self.cfg.stage(name)
        inputs: dict[str, Any] = {}
        for raw in spec.inputs:
            p = self.cfg.optional_path(raw)
            inputs[raw] = None if p is None else path_identity(p)
        for up in spec.needs:
            inputs[up] = self.fingerprint(up).value
        params, checkpoint = spec.params, checkpoint_identity(spec, self.cfg)
        if spec.uses:  # the settings of other stages this one computes with (not their outputs)
            params = {"own": params, **{u: self.cfg.stage(u).params for u in spec.uses}}
            checkpoint = {"own": checkpoint, **{u: checkpoint_identity(self.cfg.stage(u), self.cfg) for u in spec.uses}}
        comps = {
            "params": sha256_json(params),
            "code": code_identity(spec.module),
            "checkpoint": sha256_json(checkpoint),
            "inputs": inputs,
        }
        fp = Fingerprint(comps)
        self._fp[name] = fp
        return fp

    def context(self, name: str, **kw: Any) -> StageContext:
        where = placement()
        kw.setdefault("rank", where.rank)
        kw.setdefault("world_size", where.world_size)
        return StageContext(cfg=self.cfg, spec=self.cfg.stage(name), fingerprint=self.fingerprint(name), **kw)

    def recorded(self, name: str) -> dict | None:
        ctx = self.context(name)
        mod = stage_module(ctx.spec)
        return mod.read_record(ctx)
