"""Read ``stages.yaml`` (plus overlays such as ``configs/demo.yaml``) into typed stage specs.

Every path and parameter a stage uses comes from here; nothing is configured by editing code.
An overlay is merged key by key on top of the base file; ``--set stages.cavp.params.model=tiny``
style overrides are applied last. The result is checked against the schema (v2a/schema.py: each stage's
``Params``/``Runtime`` models) before anything runs; a mistake raises :class:`ConfigError`, one line per problem.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from v2a.io import folder_problem, safe_load
from v2a.schema import ConfigError, StageSpec, closest, validate_config  # noqa: F401 (StageSpec: v2a.config.StageSpec)

DEFAULT_CONFIG = "stages.yaml"
# The folder names of the run-folder layout (Config.mapper_dir ... videos_dir, evaluate-*: folder_evaluation_dir)
# under paths.runs / paths.outputs: no experiment may take one, or its <runs>/NAME, <outputs>/NAME would lie inside
# the plain run's folders (lab/experiments.py refuses such names).
RUN_FOLDERS = ("mapper", "generated", "evaluation", "ablations", "videos")
# The paths that name folders the stages write in (never a file): checked when the configuration loads.
FOLDER_PATHS = {"cache": "the feature cache folder", "runs": "the runs folder", "outputs": "the outputs folder"}


@dataclass
class Config:
    root: Path  # folder that relative paths are resolved against (the config file's folder)
    paths: dict[str, str]
    stages: dict[str, StageSpec]
    targets: dict[str, list[str]]  # named groups: extract, train, generate, evaluate
    sources: list[str] = field(default_factory=list)  # config files merged, in order
    experiment: str | None = None  # the named experiment this config is (lab/experiments.py), None = the plain run

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

    # The run-folder layout: every command that writes runs or outputs takes its folder from here (an experiment's
    # config has paths.runs / paths.outputs moved to <runs>/NAME, <outputs>/NAME by lab/experiments.py).
    @property
    def mapper_dir(self) -> Path:
        """The train stage's run: checkpoints best/ and last/, logs, summary.json."""
        return self.path("runs") / "mapper"

    @property
    def generated_dir(self) -> Path:
        """The generate stage's wav, video, png and json per clip, index.csv."""
        return self.path("outputs") / "generated"

    @property
    def evaluation_dir(self) -> Path:
        """The evaluate stage's metrics.json, table.md, per-clip scores and gallery."""
        return self.path("outputs") / "evaluation"

    @property
    def ablations_dir(self) -> Path:
        """``v2a ablations``: the combined report of every experiment."""
        return self.path("outputs") / "ablations"

    @property
    def videos_dir(self) -> Path:
        """``v2a generate VIDEO...`` without --out."""
        return self.path("outputs") / "videos"

    def folder_evaluation_dir(self, pred: Path) -> Path:
        """``v2a evaluate --pred DIR`` without --out: <outputs>/evaluate-<DIR's name>."""
        return self.path("outputs") / f"evaluate-{Path(pred).resolve().name}"

    def stage(self, name: str) -> StageSpec:
        if name not in self.stages:
            near = closest(name, list(self.stages) + list(self.targets))
            hint = f"did you mean {near!r}? " if near else ""
            raise ConfigError([f"unknown stage {name!r} ({hint}stages: {', '.join(self.stages)}; "
                               f"targets: {', '.join(self.targets) or '(none)'})"])
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

    def used_stages(self) -> list[str]:
        """The stages this configuration's chain uses, in dependency order: its last stages (those no stage needs,
        at the end of the longest ``needs`` path: evaluate) and everything they need. The others are not used by
        this run: the clip/clap encoders in the MFM-Mapper chain, cavp/timechat/audiomae in V2A-Mapper's."""
        depth: dict[str, int] = {}
        for n in self.order():
            depth[n] = 1 + max((depth[u] for u in self.stage(n).needs), default=-1)
        needed = {u for n in depth for u in self.stage(n).needs}
        ends = [n for n in depth if n not in needed]
        last = max((depth[n] for n in ends), default=0)
        return self.closure([n for n in ends if depth[n] == last])

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
        raise ConfigError([f"--set {assignment}: expected KEY=VALUE with a dotted key, e.g. "
                           "stages.cavp.runtime.batch_size=16"])
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError([f"--set {assignment}: the key {key!r} has an empty part"])
    try:
        parsed = safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError([f"--set {assignment}: the value is not valid YAML ({_yaml_problem(e)})"]) from None
    node = raw
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = parsed


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or type(e).__name__}{where}"


def read_raw(files: list[Path], overrides: list[str]) -> dict:
    """The config files merged in order, then the ``--set`` overrides; raises ConfigError on a user error."""
    raw: dict = {}
    for f in files:
        if not f.exists():
            raise ConfigError([f"configuration file {f} does not exist"])
        try:
            with open(f, encoding="utf-8") as fh:
                data = safe_load(fh) or {}
        except yaml.YAMLError as e:
            raise ConfigError([f"{f}: not valid YAML: {_yaml_problem(e)}"]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"{f}: expected a mapping at the top level"])
        raw = deep_merge(raw, data)
    for o in overrides or []:
        apply_override(raw, o)
    return raw


def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None,
                root: str | Path | None = None) -> Config:
    """Read, merge and validate the configuration (v2a/schema.py); raises ConfigError listing every problem.
    Relative paths resolve against ``root`` (default: the first file's folder)."""
    files = [Path(f) for f in (files or [DEFAULT_CONFIG])]
    checked = validate_config(read_raw(files, overrides or []))
    stages = {name: StageSpec(**body) for name, body in checked["stages"].items()}
    cfg = Config(root=Path(root).resolve() if root is not None else files[0].resolve().parent, paths=checked["paths"], stages=stages, targets=checked["targets"],
                 sources=[str(f) for f in files])
    try:
        cfg.order()
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    problems = folder_paths_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def folder_paths_problems(cfg: Config, names: tuple[str, ...] = tuple(FOLDER_PATHS), *,
                          writable: bool = False) -> list[str]:
    """``paths.cache`` / ``runs`` / ``outputs`` that name a file (or lie inside one), one line each; ``writable``: also
    those this user cannot write in (checked before a stage that writes there runs: v2a/check.py)."""
    return [f"paths.{name}: {problem}" for name, problem in folder_problems(cfg, names, writable=writable)]


def folder_problems(cfg: Config, names: tuple[str, ...], *, writable: bool) -> list[tuple[str, str]]:
    """(path name, problem) of each of the folder paths ``names`` that cannot be (``writable``: a writable) folder."""
    out = []
    for name in names:
        p = cfg.optional_path(name)
        problem = folder_problem(p, FOLDER_PATHS[name], writable=writable) if p is not None else None
        if problem:
            out.append((name, problem))
    return out
