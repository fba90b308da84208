"""Which configuration files the CLI reads: ``v2a`` runs from any folder.

- ``-c FILE`` (repeatable) names files; ``-c demo`` (or ``-c stages``) also names the copy packaged with ``v2a``
  (``v2a/configs/``, package data) when no such file exists here. A packaged overlay given first is put on top
  of the base configuration (``./stages.yaml``, else the packaged one).
- no ``-c``: ``./stages.yaml`` when the working folder has one, else the packaged ``stages.yaml`` (the paper's run),
  with relative paths (``data/``, ``cache/``, ``runs/``, ``outputs/``) resolved against the working folder.

The packaged files are links to the repository's ``stages.yaml`` and ``configs/demo.yaml`` (one source of truth;
a wheel stores their content).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "configs"
BASE = "stages.yaml"


@dataclass
class ConfigChoice:
    files: list[Path]
    root: Path | None  # None: the first file's folder (load_config's rule)
    configured: bool  # False: nothing was chosen by the user (the packaged default is used)


def packaged(name: str) -> Path | None:
    for cand in (PACKAGED / name, PACKAGED / f"{name}.yaml"):
        if cand.is_file() and cand.parent == PACKAGED:
            return cand
    return None


def choose_config(given: list[str], cwd: Path | None = None) -> ConfigChoice:
    cwd = cwd or Path.cwd()
    local_base = cwd / BASE
    base = local_base if local_base.is_file() else PACKAGED / BASE
    if not given:
        return ConfigChoice([base], None if base == local_base else cwd, configured=base == local_base)
    files = []
    for f in given:
        p = Path(f).expanduser()
        p = p if p.is_absolute() else cwd / p
        files.append(p if p.is_file() else (packaged(f) or p))  # a missing file is reported by load_config
    if files[0].parent == PACKAGED and files[0].name != BASE:
        files.insert(0, base)  # `-c demo`: the demo overlay on top of the base configuration
    return ConfigChoice(files, cwd if files[0].parent == PACKAGED else None, configured=True)


def load_chosen(given: list[str], overrides: list[str] | None = None, cwd: Path | None = None):
    """``load_config`` on the files :func:`choose_config` picks (the packaged configuration outside the repo)."""
    from v2a.config import load_config

    choice = choose_config(given, cwd)
    return load_config(choice.files, overrides, root=choice.root)
