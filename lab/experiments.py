"""Named experiments: the paper's table rows as presets, each in its own ``<runs>/NAME/`` and ``<outputs>/NAME/``.

A preset is ``configs/experiments/NAME.yaml``: an ``experiment:`` block (description, the paper rows it
reproduces) and an overlay of stages.yaml (usually a few ``stages.train.params``). Loading experiment NAME merges
the usual config files, then the preset, then the config's ``experiments.overlay`` (configs/demo.yaml's makes every
experiment cheap), multiplies the preset's epochs by ``experiments.epochs_scale``, applies the ``--set`` overrides
(they win over the preset) and moves ``paths.runs`` / ``paths.outputs`` to ``<runs>/NAME`` / ``<outputs>/NAME``.

Nothing else changes, so the frames and encoder stages keep their fingerprints and the feature cache is shared;
train, generate and evaluate are per experiment: experiments never overwrite each other, and a finished one is
fresh when run again (same fingerprint: nothing recomputed). A preset whose ``experiment:`` block says
``alias: OTHER`` is OTHER (the paper quotes one run as a row of several tables).

Bookkeeping: an experiment is *done* only when every stage of its chain is fresh (v2a/runner.py; a stale stage
upstream makes the ones below stale), so a folder another command wrote with other settings is reported as stale,
never as this preset's. After every run, ``experiment.json`` in both folders records the preset and, per stage, the
fingerprint of the output actually there; the report compares it with the stages' own records.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from v2a.config import DEFAULT_CONFIG, RUN_FOLDERS, Config, apply_override, deep_merge, load_config
from v2a.io import atomic_write_json, read_json, safe_load, sha256_bytes
from v2a.runner import Runner

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULTS = {"presets": "configs/experiments", "overlay": None, "epochs_scale": 1.0}


@dataclass
class Preset:
    name: str
    path: Path
    description: str = ""
    paper: list[dict] = field(default_factory=list)  # [{"table": 1, "row": "MFM-Mapper"}, ...]
    overlay: dict = field(default_factory=dict)  # merged on top of the config (stages: ..., paths: ...)

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.path.read_bytes())[:16]


def _raw(files: list[str | Path], overrides: list[str]) -> tuple[dict, Path]:
    """The merged mapping of the config files plus overrides (what load_config sees), and the config root."""
    files = [Path(f) for f in (files or [DEFAULT_CONFIG])]
    raw: dict = {}
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"configuration file {f} does not exist")
        raw = deep_merge(raw, safe_load(f.read_text(encoding="utf-8")) or {})
    for o in overrides:
        apply_override(raw, o)
    return raw, files[0].resolve().parent


def settings(raw: dict) -> dict:
    unknown = sorted(set(raw.get("experiments") or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"experiments: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **(raw.get("experiments") or {})}


def _resolve(root: Path, value: str) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else root / p


def presets(files: list[str | Path], overrides: list[str] | None = None) -> dict[str, Path]:
    """{name: preset file} of every experiment the configuration knows, sorted by name."""
    raw, root = _raw(files, overrides or [])
    folder = _resolve(root, settings(raw)["presets"])
    if not folder.is_dir():
        raise ValueError(f"experiments.presets: {folder} is not a folder of NAME.yaml presets")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"), key=lambda f: f.stem) if NAME_RE.match(p.stem)}


def read_preset(name: str, known: dict[str, Path], _seen: tuple[str, ...] = ()) -> Preset:
    if not NAME_RE.match(name or ""):
        raise ValueError(f"experiment name {name!r}: use letters, digits, '.', '_' and '-' (64 at most)")
    if name.split(".")[0] in RUN_FOLDERS or name.startswith("evaluate-"):
        raise ValueError(f"experiment name {name!r}: <runs>/{name}, <outputs>/{name} would lie in the plain run's "
                         f"folders ({', '.join(RUN_FOLDERS)}, evaluate-*); choose another name")
    if name not in known:
        raise ValueError(f"unknown experiment {name!r}; presets: {', '.join(known) or '(none)'}")
    data = safe_load(known[name].read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{known[name]}: expected a mapping at the top level")
    meta = dict(data.pop("experiment", None) or {})
    if meta.get("alias"):
        if meta["alias"] in _seen + (name,):
            raise ValueError(f"experiment {name}: alias cycle {' -> '.join(_seen + (name, meta['alias']))}")
        return read_preset(str(meta["alias"]), known, _seen + (name,))
    bad = sorted(set(meta) - {"description", "paper"})
    if bad:
        raise ValueError(f"{known[name]}: unknown keys experiment.{bad}; known: alias, description, paper")
    return Preset(name, known[name], str(meta.get("description", "")), list(meta.get("paper") or []), data)


def flatten(d: dict, prefix: str = "") -> list[str]:
    """A nested mapping as ``a.b.c=<json>`` overrides (JSON is YAML, so apply_override reads the value back)."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += flatten(v, key + ".") if isinstance(v, dict) and v else [f"{key}={json.dumps(v)}"]
    return out


def experiment_overrides(files: list[str | Path], overrides: list[str], name: str) -> tuple[list[str], Preset]:
    """The ``--set`` list that turns the configuration into experiment ``name`` (see the module docstring)."""
    raw, root = _raw(files, overrides)
    opts = settings(raw)
    preset = read_preset(name, presets(files, overrides))
    sets = flatten(preset.overlay)
    merged = deep_merge(raw, preset.overlay)
    if opts["overlay"]:
        extra = _resolve(root, opts["overlay"])
        if not extra.is_file():
            raise ValueError(f"experiments.overlay: {extra} does not exist")
        over = safe_load(extra.read_text(encoding="utf-8")) or {}
        sets += flatten(over)
        merged = deep_merge(merged, over)
    scale = float(opts["epochs_scale"])
    if scale != 1.0:
        epochs = int(((merged.get("stages") or {}).get("train") or {}).get("params", {}).get("epochs", 40))
        sets.append(f"stages.train.params.epochs={max(1, round(epochs * scale))}")
    sets += overrides  # the user's --set wins over the preset and the overlay
    paths = raw.get("paths") or {}
    for key in ("runs", "outputs"):
        if not paths.get(key):
            raise ValueError(f"paths.{key} is empty: an experiment writes under <{key}>/{name}")
        sets.append(f"paths.{key}={json.dumps(str(Path(str(paths[key])) / preset.name))}")
    return sets, preset


def experiment_config(files: list[str | Path], overrides: list[str] | None, name: str,
                      root: str | Path | None = None) -> tuple[Config, Preset]:
    """The Config of experiment ``name`` (with ``cfg.experiment`` set) and its preset."""
    sets, preset = experiment_overrides(list(files), list(overrides or []), name)
    cfg = load_config(files, sets, root=root)
    cfg.experiment = preset.name
    return cfg, preset


def folder_identity(r: Runner) -> dict[str, str | None]:
    """{stage: the fingerprint recorded with its complete output on disk, None when there is none} for every stage
    the experiment's chain uses (Config.used_stages): what its folders (and the shared cache) actually hold."""
    out: dict[str, str | None] = {}
    for name in r.cfg.used_stages():
        rec = r.recorded(name)
        out[name] = rec.get("fingerprint") if rec and rec.get("complete") else None
    return out


def write_identity(r: Runner, preset: Preset, files: list[str | Path], overrides: list[str]) -> dict:
    """``experiment.json`` in the experiment's runs and outputs folders, written after every run (failed ones too):
    the preset, how it was configured and, per stage, the fingerprint of the output actually there (``stages``);
    ``train_params`` only when the run folder holds this configuration's train stage."""
    stages = folder_identity(r)
    train = "train" in stages and stages["train"] == r.fingerprint("train").value
    rec = {"experiment": preset.name, "description": preset.description, "paper": preset.paper,
           "preset": str(preset.path), "preset_sha256": preset.sha256, "config_files": [str(f) for f in files],
           "overrides": list(overrides), "stages": stages,
           "train_params": dict(r.cfg.stage("train").params) if train else None}
    for folder in (r.cfg.path("runs"), r.cfg.path("outputs")):
        path = folder / "experiment.json"
        if not path.exists() or read_json(path) != rec:  # a rerun that changed nothing leaves it as it was
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, rec)
    return rec


def run_in(r: Runner, files: list[str | Path], overrides: list[str] | None, targets: list[str],
           **kw: Any) -> list[str]:
    """``r.run(targets)`` for the experiment ``r.cfg`` is (experiment_config), then its ``experiment.json``."""
    preset = read_preset(str(r.cfg.experiment), presets(files, overrides))
    log.info("experiment %s: runs in %s, outputs in %s, cache %s", preset.name, r.cfg.path("runs"),
             r.cfg.path("outputs"), r.cfg.cache_dir)
    try:
        return r.run(targets, **kw)
    finally:
        write_identity(r, preset, files, list(overrides or []))


def run_experiment(files: list[str | Path], overrides: list[str] | None, name: str, targets: list[str], *,
                   root: str | Path | None = None, **kw: Any) -> list[str]:
    """Run ``targets`` (and what is stale upstream of them) for experiment ``name``; returns the stages run."""
    cfg, _ = experiment_config(files, overrides, name, root=root)
    return run_in(Runner(cfg), files, overrides, targets, **kw)


def chain_status(r: Runner, stages: list[str]) -> tuple[str, dict[str, tuple[bool, list[str]]]]:
    """('done' | 'not run' | 'stale (STAGE: why)', each stage's status): done only when every stage is fresh; not
    run when the last never ran and neither did the first stale one; else the first stale stage and why."""
    st = r.statuses(stages)
    stale = [n for n in stages if not st[n][0]]
    if not stale:
        return "done", st
    if st[stale[0]][1] == ["never run"] and st[stages[-1]][1] == ["never run"]:
        return "not run", st
    return f"stale ({stale[0]}: {'; '.join(st[stale[0]][1])})", st


def collect(files: list[str | Path], overrides: list[str] | None, name: str, *, root: str | Path | None = None,
            target: str = "evaluate") -> dict:
    """What the combined report needs of one experiment: its preset, status and, only when they are this preset's
    current run (fresh: the recorded fingerprints equal the ones computed now), its metrics and training summary."""
    from lab.dynamics import read_curve

    try:
        cfg, preset = experiment_config(files, overrides, name, root=root)
    except (ValueError, FileNotFoundError) as e:
        return {"name": name, "status": f"invalid: {e}", "paper": [], "metrics": None, "train": None}
    r = Runner(cfg)
    try:
        status, st = chain_status(r, cfg.closure([target]))
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        status, st = f"cannot tell: {e}", {}
    identity = _compare_identity(r, preset, list(st), status)
    ev, summary = cfg.evaluation_dir / "metrics.json", cfg.mapper_dir / "summary.json"
    trained = st.get("train", (False,))[0]
    return {"name": preset.name, "description": preset.description, "paper": preset.paper, "status": status,
            "metrics": read_json(ev) if status == "done" and ev.exists() else None,
            "train": read_json(summary) if trained and summary.exists() else None,
            "epochs": cfg.stage("train").params.get("epochs"), "evaluation": str(ev.parent),
            "dynamics": read_curve(cfg.mapper_dir) if trained else None, "identity": identity}


def _compare_identity(r: Runner, preset: Preset, stages: list[str], status: str) -> str:
    """'ok', or how a done experiment's experiment.json disagrees with what its stages record (then also a warning:
    the numbers are still this preset's, proven by the stages' own fingerprints)."""
    path = r.cfg.path("outputs") / "experiment.json"
    if status != "done":
        return "not checked (not done)"
    rec = read_json(path) if path.exists() else {}
    said = rec.get("stages") or {}
    differ = [n for n in stages if said.get(n) != r.fingerprint(n).value]
    if rec.get("experiment") == preset.name and not differ:
        return "ok"
    note = (f"{path} does not describe its outputs ({'stages ' + ', '.join(differ) if differ else 'other preset'}); "
            f"the next `v2a run evaluate --experiment {preset.name}` rewrites it")
    log.warning("experiment %s: %s", preset.name, note)
    return note


def check_not_an_experiment(cfg: Config) -> None:
    """Refuse a plain run (no --experiment) whose paths.runs or paths.outputs is an experiment's folder: only that
    experiment, with its settings, writes there."""
    if cfg.experiment is not None:
        return
    for key in ("runs", "outputs"):
        path = cfg.path(key) / "experiment.json"
        if path.is_file():
            name = read_json(path).get("experiment", "?")
            raise ValueError(f"paths.{key} {cfg.path(key)} is experiment {name}'s folder: run it as "
                             f"`--experiment {name}`, or set paths.{key} to another folder")


def distinct(files: list[str | Path], overrides: list[str] | None = None) -> list[str]:
    """Preset names that are experiments of their own (aliases left out), in name order."""
    known = presets(files, overrides)
    order = {}
    for name in known:
        try:
            pre = read_preset(name, known)
        except ValueError:
            pre = Preset(name, known[name])  # an invalid preset is reported as such by ablations()
        if pre.name == name:
            order[name] = min([_paper_position(r) for r in pre.paper] or [(99, 0)])
    return sorted(order, key=lambda n: (order[n], n))


def _paper_position(ref: dict) -> tuple[int, int]:
    """(table, row index) of a paper row, for listing experiments in the paper's order."""
    from scoring.report import PAPER_TABLES

    rows = list(PAPER_TABLES.get(int(ref.get("table", 99)), {}).get("rows", {}))
    return int(ref.get("table", 99)), rows.index(ref.get("row")) if ref.get("row") in rows else len(rows)


def ablations(files: list[str | Path], overrides: list[str] | None = None, names: list[str] | None = None, *,
              run: bool = True, target: str = "evaluate", root: str | Path | None = None, **kw: Any) -> dict:
    """Run every experiment (or ``names``) up to ``target`` and write one combined report to
    ``<outputs>/ablations/``; an experiment that fails is reported with its error and the others go on. A row's
    numbers are reported only when the experiment is fresh (its folders hold this preset's current run)."""
    from scoring.report import write_combined

    overrides = list(overrides or [])
    names = names or distinct(files, overrides)
    errors: dict[str, str] = {}
    for name in names:
        if not run:
            break
        try:
            ran = run_experiment(files, overrides, name, [target], root=root, **kw)
            log.info("experiment %s: %s", name, f"ran {', '.join(ran)}" if ran else "up to date (nothing recomputed)")
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            log.error("experiment %s failed: %s", name, e)
            errors[name] = str(e)
    entries = []
    for name in names:
        e = collect(files, overrides, name, root=root, target=target)
        if name in errors:
            e["status"] = f"failed: {errors[name]}"
        entries.append(e)
    cfg = load_config(files, overrides, root=root)
    paths = write_combined(cfg.ablations_dir, entries)
    curves = {e["name"]: e["dynamics"] for e in entries if e.get("dynamics")}
    if curves:  # Fig. 3: the training dynamics of every experiment that computed them, in one figure
        from lab.dynamics import plot_curve

        paths["dynamics"] = cfg.ablations_dir / "dynamics.png"
        plot_curve(curves, paths["dynamics"])
    return {"entries": entries, "errors": errors, "files": {k: str(v) for k, v in paths.items()}}
