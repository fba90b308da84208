"""Read ``stages.yaml`` (plus overlays such as ``configs/demo.yaml``) into typed stage specs.

Every path and parameter a stage uses comes from here; nothing is configured by editing code.
An overlay is merged key by key on top of the base file; ``--set stages.cavp.params.model=tiny``
style overrides are applied last.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = "stages.yaml"


@dataclass
class StageSpec:
    name: str
    module: str  # python module with run(ctx)
    needs: list[str] = field(default_factory=list)  # upstream stages
    inputs: list[str] = field(default_factory=list)  # names under `paths` that are raw inputs (frames stage)
    checkpoints: list[str] = field(default_factory=list)  # keys of params that name weights (paths or hub ids)
    params: dict[str, Any] = field(default_factory=dict)  # fingerprinted: changing them reruns the stage
    runtime: dict[str, Any] = field(default_factory=dict)  # not fingerprinted: workers, batch size, device
    description: str = ""


@dataclass
class Config:
    root: Path  # folder that relative paths are resolved against (the config file's folder)
    paths: dict[str, str]
    stages: dict[str, StageSpec]
    targets: dict[str, list[str]]  # named groups: extract, train, generate, evaluate
    sources: list[str] = field(default_factory=list)  # config files merged, in order

    def path(self, name: str) -> Path:
        """Resolve a named path (``paths.<name>``) against the config root."""
        if name not in self.paths:
            raise KeyError(f"stages.yaml has no paths.{name}; known: {sorted(self.paths)}")
        value = self.paths[name]
        if value in (None, ""):
            raise ValueError(f"paths.{name} is empty in the configuration")
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else self.root / p

    def optional_path(self, name: str) -> Path | None:
        value = self.paths.get(name)
        return None if value in (None, "") else self.path(name)

    @property
    def cache_dir(self) -> Path:
        return self.path("cache")

    @property
    def frames_dir(self) -> Path:
        return self.cache_dir / "frames"

    @property
    def zarr_path(self) -> Path:
        return self.cache_dir / "features.zarr"

    def stage(self, name: str) -> StageSpec:
        if name not in self.stages:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(self.stages)}")
        return self.stages[name]

    def order(self) -> list[str]:
        """Stages in dependency order (stable with respect to the file's order)."""
        done: list[str] = []

        def visit(n: str, trail: tuple[str, ...]) -> None:
            if n in done:
                return
            if n in trail:
                raise ValueError(f"stages.yaml: dependency cycle {' -> '.join(trail + (n,))}")
            for up in self.stage(n).needs:
                visit(up, trail + (n,))
            done.append(n)

        for n in self.stages:
            visit(n, ())
        return done

    def closure(self, names: list[str]) -> list[str]:
        """The named stages/targets plus everything upstream, in dependency order."""
        wanted: set[str] = set()

        def add(n: str) -> None:
            if n in wanted:
                return
            wanted.add(n)
            for up in self.stage(n).needs:
                add(up)

        for n in names:
            for s in self.targets.get(n, [n]):
                add(s)
        return [n for n in self.order() if n in wanted]

    def downstream(self, name: str) -> list[str]:
        out = [n for n in self.order() if name in self.stage(n).needs]
        for n in list(out):
            out += [m for m in self.downstream(n) if m not in out]
        return [n for n in self.order() if n in out]


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw mapping in place."""
    if "=" not in assignment:
        raise ValueError(f"--set expects KEY=VALUE with a dotted key, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = yaml.safe_load(value)


def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    files = [Path(f) for f in (files or [DEFAULT_CONFIG])]
    raw: dict = {}
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"configuration file {f} does not exist")
        with open(f, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected a mapping at the top level")
        raw = deep_merge(raw, data)
    for o in overrides or []:
        apply_override(raw, o)
    root = files[0].resolve().parent
    stages = {}
    for name, body in (raw.get("stages") or {}).items():
        body = dict(body or {})
        unknown = set(body) - set(StageSpec.__dataclass_fields__) - {"name"}
        if unknown:
            raise ValueError(f"stages.{name}: unknown keys {sorted(unknown)}")
        body.pop("name", None)
        if "module" not in body:
            raise ValueError(f"stages.{name}: 'module' (the python module with run(ctx)) is required")
        stages[name] = StageSpec(name=name, **body)
    targets = {k: list(v) for k, v in (raw.get("targets") or {}).items()}
    cfg = Config(root=root, paths=dict(raw.get("paths") or {}), stages=stages, targets=targets,
                 sources=[str(f) for f in files])
    for s in stages.values():
        for up in s.needs:
            cfg.stage(up)  # raises on unknown
    cfg.order()
    return cfg
