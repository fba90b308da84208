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
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from v2a.config import DEFAULT_CONFIG, Config, apply_override, deep_merge, load_config
from v2a.io import atomic_write_json, read_json, safe_load, sha256_bytes

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


def write_identity(cfg: Config, preset: Preset, files: list[str | Path], overrides: list[str]) -> None:
    """``experiment.json`` in the experiment's runs and outputs folders: what it is and how it was configured."""
    rec = {"experiment": preset.name, "description": preset.description, "paper": preset.paper,
           "preset": str(preset.path), "preset_sha256": preset.sha256, "config_files": [str(f) for f in files],
           "overrides": list(overrides), "train_params": cfg.stage("train").params}
    for key in ("runs", "outputs"):
        folder = cfg.path(key)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "experiment.json", rec)


def run_experiment(files: list[str | Path], overrides: list[str] | None, name: str, targets: list[str],
                   **kw: Any) -> list[str]:
    """Run ``targets`` (and what is stale upstream of them) for experiment ``name``; returns the stages run."""
    from v2a.runner import Runner

    cfg, preset = experiment_config(files, overrides, name)
    write_identity(cfg, preset, files, list(overrides or []))
    log.info("experiment %s: runs in %s, outputs in %s, cache %s", preset.name, cfg.path("runs"),
             cfg.path("outputs"), cfg.cache_dir)
    return Runner(cfg).run(targets, **kw)


def collect(files: list[str | Path], overrides: list[str] | None, name: str) -> dict:
    """What the combined report needs of one experiment: its preset, metrics and training summary (or why not)."""
    from lab.dynamics import read_curve

    try:
        cfg, preset = experiment_config(files, overrides, name)
    except (ValueError, FileNotFoundError) as e:
        return {"name": name, "status": f"invalid: {e}", "paper": [], "metrics": None, "train": None}
    ev = cfg.evaluation_dir / "metrics.json"
    summary = cfg.mapper_dir / "summary.json"
    metrics = read_json(ev) if ev.exists() else None
    return {"name": preset.name, "description": preset.description, "paper": preset.paper,
            "status": "done" if metrics and metrics.get("complete") else "not run",
            "metrics": metrics, "train": read_json(summary) if summary.exists() else None,
            "epochs": cfg.stage("train").params.get("epochs"), "evaluation": str(ev.parent),
            "dynamics": read_curve(cfg.mapper_dir)}


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
              run: bool = True, target: str = "evaluate", **kw: Any) -> dict:
    """Run every experiment (or ``names``) up to ``target`` and write one combined report to
    ``<outputs>/ablations/``; an experiment that fails is reported with its error and the others go on."""
    from scoring.report import write_combined

    overrides = list(overrides or [])
    names = names or distinct(files, overrides)
    errors: dict[str, str] = {}
    for name in names:
        if not run:
            break
        try:
            ran = run_experiment(files, overrides, name, [target], **kw)
            log.info("experiment %s: %s", name, f"ran {', '.join(ran)}" if ran else "up to date (nothing recomputed)")
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            log.error("experiment %s failed: %s", name, e)
            errors[name] = str(e)
    entries = []
    for name in names:
        e = collect(files, overrides, name)
        if name in errors:
            e["status"] = f"failed: {errors[name]}"
        entries.append(e)
    cfg = load_config(files, overrides)
    paths = write_combined(cfg.ablations_dir, entries)
    curves = {e["name"]: e["dynamics"] for e in entries if e.get("dynamics")}
    if curves:  # Fig. 3: the training dynamics of every experiment that computed them, in one figure
        from lab.dynamics import plot_curve

        paths["dynamics"] = cfg.ablations_dir / "dynamics.png"
        plot_curve(curves, paths["dynamics"])
    return {"entries": entries, "errors": errors, "files": {k: str(v) for k, v in paths.items()}}
