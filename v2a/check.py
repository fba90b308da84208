"""Preflight (``v2a check``, and ``v2a run`` before its first stage): every problem a chain of stages would hit,
found in seconds and reported together, before hours of work are spent.

Generic checks live here: input paths present and non-empty, every checkpoint param resolvable without the network
(a weights-manifest entry on disk or in the Hugging Face cache, a local path; a bare hub id only when online),
devices (CUDA asked for where there is none). What only a stage knows (which model its checkpoint must fit, half
precision rules) is its module's ``preflight(ctx) -> [(item, problem)]``, called when the module defines one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from v2a.config import Config, StageSpec, folder_problems
from v2a.context import Stages, stage_module
from v2a.manifest import hub_offline, load_manifest, local_path, weights_dir

log = logging.getLogger(__name__)

OPTIONAL_INPUTS = ("labels", "train_ids")  # may be unset (null); when set, it must exist
# The paths.* folder a stage writes in, by its module's package (a module may say otherwise: ``WRITES = ("runs",)``).
WRITES = {"pipeline": ("cache",), "trainer": ("runs",), "infer": ("outputs",), "scoring": ("outputs",)}


@dataclass(frozen=True)
class Problem:
    stage: str
    item: str
    problem: str


def check_inputs(cfg: Config, spec: StageSpec) -> list[Problem]:
    out = []
    for name in spec.inputs:
        if cfg.paths.get(name) in (None, ""):
            if name not in OPTIONAL_INPUTS:
                out.append(Problem(spec.name, f"paths.{name}", "is not set"))
            continue
        p = cfg.path(name)
        if not p.exists() and name in OPTIONAL_INPUTS and _webdataset_videos(cfg):
            continue  # webdataset shards carry their labels in <key>.json / <key>.cls
        if not p.exists():
            out.append(Problem(spec.name, f"paths.{name}", f"{p} does not exist"))
        elif p.is_dir() and not any(f for f in p.iterdir() if not f.name.startswith(".")):
            out.append(Problem(spec.name, f"paths.{name}", f"{p} is an empty folder"))
        elif p.is_file() and p.stat().st_size == 0:
            out.append(Problem(spec.name, f"paths.{name}", f"{p} is an empty file"))
    return out


def check_output_folders(cfg: Config, spec: StageSpec) -> list[Problem]:
    """The folders the stage writes in are folders (not files) this user can write in: one line each, before
    anything runs, instead of a NotADirectoryError or PermissionError half-way."""
    writes = getattr(stage_module(spec), "WRITES", None)
    if writes is None:
        writes = WRITES.get(spec.module.split(".")[0], ())
    names = tuple(n for n in writes if cfg.paths.get(n) not in (None, ""))
    return [Problem(spec.name, f"paths.{name}", problem)
            for name, problem in folder_problems(cfg, names, writable=True)]


def _webdataset_videos(cfg: Config) -> bool:
    videos = cfg.optional_path("videos")
    return videos is not None and videos.is_dir() and any(videos.glob("*.tar"))


def check_checkpoints(cfg: Config, spec: StageSpec, manifest: dict, wdir: Path) -> list[Problem]:
    """Every checkpoint param resolvable on this machine, looked up without any network call."""
    if spec.params.get("model") == "tiny":
        return []
    out = []
    for key in spec.checkpoints:
        value = spec.params.get(key)
        if value in (None, "", "tiny", "random-full"):  # no file: seeded random models
            continue
        item = f"params.{key}"
        if isinstance(value, str) and value in manifest:
            e = manifest[value]
            if local_path(e, wdir) is None:
                where = wdir / e.file if e.file else f"hf://{e.hub['repo']}, not in the Hugging Face cache"
                out.append(Problem(spec.name, item, f"weight {value} is missing ({where}): "
                                                    f"run `v2a weights fetch {value}`"))
            continue
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else cfg.root / p
        if p.exists():
            continue
        hub_like = str(value).count("/") >= 1 and not str(value).startswith((".", "/", "~"))
        if not hub_like:
            out.append(Problem(spec.name, item, f"{p} does not exist (nor is {value!r} a v2a/weights.yaml entry)"))
        elif hub_offline():
            out.append(Problem(spec.name, item, f"{value!r} is not a local path and HF_HUB_OFFLINE=1 forbids "
                                                "fetching it from the hub; name a weights-manifest entry instead"))
    return out


def check_devices(spec: StageSpec) -> list[Problem]:
    out = []
    for where, d in (("runtime.device", spec.runtime.get("device")), ("params.device", spec.params.get("device"))):
        if isinstance(d, str) and d.startswith("cuda") and not _cuda():
            out.append(Problem(spec.name, where, f"{d!r} asked for, but CUDA is not available here; use auto or cpu"))
    return out


def _cuda() -> bool:
    import torch  # only when a CUDA device is named

    return torch.cuda.is_available()


def stage_preflight(runner: Stages, name: str) -> list[Problem]:
    """The stage module's own ``preflight(ctx)``; an exception there is reported as a problem, not raised."""
    spec = runner.cfg.stage(name)
    mod = stage_module(spec)
    if not hasattr(mod, "preflight"):
        return []
    ctx = runner.context(name, strict=False)
    try:
        return [Problem(name, item, msg) for item, msg in mod.preflight(ctx)]
    except Exception as err:  # an unreadable checkpoint, a broken config: reported with the others
        return [Problem(name, "preflight", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")]


def preflight(cfg: Config, names: list[str]) -> list[Problem]:
    """All problems of the stages ``names`` (in order), generic checks first."""
    manifest, wdir = load_manifest(), weights_dir(cfg)
    runner = Stages(cfg)
    out: list[Problem] = []
    for name in names:
        spec = cfg.stage(name)
        out += check_inputs(cfg, spec) + check_output_folders(cfg, spec) + check_checkpoints(cfg, spec, manifest, wdir)
        out += check_devices(spec)
        out += stage_preflight(runner, name)
    return out


def format_problems(problems: list[Problem]) -> str:
    w_stage = max([5] + [len(p.stage) for p in problems])
    w_item = max([4] + [len(p.item) for p in problems])
    lines = [f"{'stage':<{w_stage}}  {'item':<{w_item}}  problem", f"{'-' * w_stage}  {'-' * w_item}  -------"]
    lines += [f"{p.stage:<{w_stage}}  {p.item:<{w_item}}  {p.problem}" for p in problems]
    lines.append(f"{len(problems)} problem(s)")
    return "\n".join(lines)


def missing_weights(cfg: Config, name: str) -> list[str]:
    """Quick presence check for ``v2a status`` (no model built): the missing checkpoints of one stage."""
    return [f"{p.item} {p.problem}" for p in check_checkpoints(cfg, cfg.stage(name), load_manifest(), weights_dir(cfg))]
