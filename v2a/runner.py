"""The stage runner: decides which stages are stale, runs them in order, records what they produced.

A stage is *fresh* when the fingerprint recorded with its output equals the fingerprint computed now from
  - its own ``params`` (not its ``runtime`` options: workers, batch size, device),
  - its code: the content of every project file its module imports, transitively (v2a/code.py),
  - the identity of every checkpoint it loads (local file: path/size/mtime; hub id: the id itself),
  - its inputs: raw input files for the frames stage, the *current* fingerprints of its upstream stages.
Changing one encoder's params therefore makes that encoder and what reads it (train, generate) stale,
and nothing else.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.code import code_identity
from v2a.config import Config, StageSpec
from v2a.dist import placement
from v2a.io import sha256_json

log = logging.getLogger(__name__)


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
    from v2a.weights import WeightError, load_manifest, resolve, weights_dir

    if not spec.checkpoints or spec.params.get("model") == "tiny":  # tiny models load no checkpoint
        return spec.params
    manifest, wdir, out = load_manifest(), weights_dir(cfg), dict(spec.params)
    for key in spec.checkpoints:
        value = out.get(key)
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
    _resolved: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def params(self) -> dict[str, Any]:
        """The stage's params, weights-manifest names resolved to local paths (v2a/weights.yaml)."""
        if self._resolved is None:
            self._resolved = resolved_params(self.spec, self.cfg)
        return self._resolved

    def runtime(self, key: str, default: Any = None) -> Any:
        return self.spec.runtime.get(key, default)

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


class Runner:
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
        comps = {
            "params": sha256_json(spec.params),
            "code": code_identity(spec.module),
            "checkpoint": sha256_json(checkpoint_identity(spec, self.cfg)),
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

    def status(self, name: str) -> tuple[bool, list[str]]:
        rec = self.recorded(name)
        if rec and not rec.get("complete", False):
            reasons = [rec.get("progress") or "incomplete"]
            fp = self.fingerprint(name)
            if rec.get("fingerprint") not in (None, fp.value):
                reasons = fp.diff(rec) + reasons
            return False, reasons
        reasons = self.fingerprint(name).diff(rec)
        return not reasons, reasons

    def problems(self, names: list[str] | None = None) -> list[str]:
        """What stops the stages (default: all) from running, one line each, without running anything.

        Every stage's ``inputs`` are checked here; a stage module may add its own checks (weights, devices...)
        with an optional ``problems(ctx) -> list[str]`` function.
        """
        out: list[str] = []
        for name in self.cfg.closure(names) if names else self.cfg.order():
            spec = self.cfg.stage(name)
            for key in spec.inputs:
                out += [p for p in input_problems(self.cfg, name, key) if p not in out]
            hook = getattr(stage_module(spec), "problems", None)
            if hook is not None:
                out += [p for p in hook(self.context(name)) if p not in out]
        return out

    def preflight(self, names: list[str]) -> None:
        """Raise PreflightError with the table of every problem of the stages ``names`` (none: return)."""
        from v2a.check import format_problems, preflight

        if not names:
            return
        t0 = time.time()
        problems = preflight(self.cfg, names)
        log.info("preflight of %s: %d problem(s) in %.1f s", ", ".join(names), len(problems), time.time() - t0)
        if problems:
            first = problems[0]
            raise PreflightError(f"preflight found {len(problems)} problem(s), nothing was run; first: {first.stage} "
                                 f"{first.item}: {first.problem}\n{format_problems(problems)}")

    def run(self, names: list[str], *, force: bool = False, only: bool = False, check: bool = True,
            **kw: Any) -> list[str]:
        """Run the named stages/targets (and their stale upstream stages unless ``only``); returns those run.
        ``check``: first the preflight (v2a/check.py) of every stage that will run; any problem stops it all."""
        order = [n for n in names] if only else self.cfg.closure(names)
        self._fp.clear()  # inputs may have changed since this runner last looked
        if check:
            self.preflight([n for n in order if (force and (only or n in names)) or not self.status(n)[0]])
        ran = []
        for name in order:
            fresh, reasons = self.status(name)
            forced = force and (only or name in names)
            if fresh and not forced:
                log.info("stage %-9s up to date (%s)", name, self.fingerprint(name).value)
                continue
            for up in self.cfg.stage(name).needs:
                up_fresh, up_reasons = self.status(up)
                if not up_fresh:
                    raise RuntimeError(
                        f"stage {name} needs {up}, which is stale ({'; '.join(up_reasons)}): "
                        f"run `v2a stage {up}` (or `v2a run {name}`) first"
                    )
            why = "forced" if forced else ", ".join(reasons)
            log.info("stage %-9s running (%s)", name, why)
            ctx = self.context(name, force=forced, **kw)
            t0 = time.time()
            stage_module(ctx.spec).run(ctx)
            log.info("stage %-9s finished in %.1f s", name, time.time() - t0)
            ran.append(name)
            # Downstream fingerprints depend on this stage's; recompute lazily.
            self._fp.clear()
        return ran
