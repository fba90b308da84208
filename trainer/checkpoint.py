"""Checkpoints of the mapper: one folder (``<run>/last``, ``<run>/best``) holding

- ``model-<step>.safetensors``: the weights;
- ``train-<step>.pt``: optimizer and LR-scheduler state, RNG states (only in ``last``);
- ``config.json`` (TrainConfig), ``mapper.json`` (MapperSpec: rebuilds the model without the cache or the hub);
- ``manifest.json``, written last and atomically: names the files above and holds epoch/step/data-order state.

Every file is written atomically (temp file + rename); the step-suffixed names mean a kill at any point leaves
the previous manifest pointing at complete files. Files no manifest names are removed after the commit.

With ``save_every: k`` a run also keeps ``<run>/epochs/epoch-NNNN/`` (weights only) after epochs k, 2k, ... and the
last: what the ``dynamics`` stage (lab/dynamics.py, paper Fig. 3) reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from v2a.io import atomic_path, atomic_write_json, read_json

MANIFEST = "manifest.json"
EPOCHS = "epochs"  # <run>/epochs/epoch-NNNN/: the per-epoch weights of save_every


def epoch_folder(epoch: int) -> str:
    """The folder, relative to the run, of the weights saved after ``epoch``."""
    return f"{EPOCHS}/epoch-{epoch:04d}"


def saves_epoch(epoch: int, every: int, last: int) -> bool:
    """Whether ``save_every: every`` keeps the weights after ``epoch`` (of ``last``): epochs k, 2k, ... and the last."""
    return every > 0 and (epoch % every == 0 or epoch == last)


def saved_epochs(run: str | Path) -> dict[int, Path]:
    """{epoch: folder} of the complete per-epoch checkpoints of a run, by epoch."""
    found = {}
    for folder in Path(run, EPOCHS).glob("epoch-*"):
        tail = folder.name.removeprefix("epoch-")
        if tail.isdigit() and has_checkpoint(folder):
            found[int(tail)] = folder
    return dict(sorted(found.items()))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(folder: str | Path, *, weights: dict[str, torch.Tensor], manifest: dict[str, Any],
                     config: dict, mapper: dict, train_state: dict | None = None) -> Path:
    """Write one checkpoint; ``manifest`` must hold ``step``. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    step = int(manifest["step"])
    names = {"weights": f"model-{step:08d}.safetensors"}
    with atomic_path(folder / names["weights"]) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
    if train_state is not None:
        names["train_state"] = f"train-{step:08d}.pt"
        with atomic_path(folder / names["train_state"]) as tmp:
            torch.save(train_state, tmp)
    atomic_write_json(folder / "config.json", config)
    atomic_write_json(folder / "mapper.json", mapper)
    atomic_write_json(folder / MANIFEST, {**manifest, "files": names, "config": config, "mapper": mapper})
    keep = set(names.values()) | {MANIFEST, "config.json", "mapper.json"}
    for f in folder.iterdir():  # stale files of older steps (never the ones just committed)
        if f.is_file() and f.name not in keep and f.name.startswith(("model-", "train-")):
            f.unlink(missing_ok=True)
    return folder


def has_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_checkpoint(folder: str | Path, *, with_optimizer: bool = True) -> dict:
    """-> {"manifest", "config", "mapper", "weights", "train_state" (or None)}."""
    folder = Path(folder)
    if not has_checkpoint(folder):
        raise FileNotFoundError(f"{folder} holds no mapper checkpoint (no {MANIFEST}); train first or pass the "
                                "run's best/ or last/ folder")
    manifest = read_json(folder / MANIFEST)
    files = manifest["files"]
    out = {"manifest": manifest, "config": manifest["config"], "mapper": manifest["mapper"],
           "weights": load_file(str(folder / files["weights"])), "train_state": None}
    if with_optimizer and "train_state" in files:
        out["train_state"] = torch.load(folder / files["train_state"], map_location="cpu", weights_only=True)
    return out
