"""Training logs: ``log.csv`` (every epoch, full precision), optional TensorBoard, one short INFO line per epoch.

TensorBoard is an optional extra (``pip install 'mfm-mapper[tensorboard]'``), switched on with
``stages.train.runtime.tensorboard: true``; it writes ``<run>/tb/`` with the same scalars as log.csv (and the
training-dynamics metrics when they are computed). The per-step progress bar is shown only on an interactive
terminal and disappears at the end of each epoch, so a log file holds one line per epoch, not a bar and a line.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

from v2a.io import atomic_write_text

log = logging.getLogger(__name__)

CSV_FIELDS = ["epoch", "step", "lr", "train_loss", "val_loss", "tf_mse", "tf_cos", "ar_mse", "ar_cos",
              "base_mse", "base_cos", "seconds"]
SCALARS = CSV_FIELDS[2:-1]


def g5(x) -> str:
    """A float with 5 significant digits for log lines (None -> '-')."""
    return "-" if x is None else f"{float(x):.5g}"


def epoch_line(row: dict, epochs: int) -> str:
    """``epoch 3/40: train 0.19415 val 0.2967 (tf cos 0.83983, ar cos 0.8, mean-token baseline 0.053044) 1.2 s``."""
    return (f"epoch {row['epoch']}/{epochs}: train {g5(row.get('train_loss'))} val {g5(row.get('val_loss'))} "
            f"(tf cos {g5(row.get('tf_cos'))}, ar cos {g5(row.get('ar_cos'))}, mean-token baseline "
            f"{g5(row.get('base_mse'))}) {g5(row.get('seconds'))} s")


def show_bar(progress: bool, rank: int) -> bool:
    """A tqdm bar only when asked, on rank 0 and on a terminal (a redirected log gets the epoch lines only)."""
    return progress and rank == 0 and sys.stderr.isatty()


def write_csv(out: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out / "log.csv", buf.getvalue())


def tensorboard(out: Path, wanted: bool):
    """A SummaryWriter on ``<out>/tb`` when ``wanted`` and installed; None otherwise (with a warning if wanted)."""
    if not wanted:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train: tensorboard was asked for (runtime.tensorboard) but is not installed "
                    "(pip install 'mfm-mapper[tensorboard]'); logging to log.csv only")
        return None
    return SummaryWriter(str(out / "tb"))


def add_scalars(writer, row: dict, step: int, prefix: str = "") -> None:
    if writer is None:
        return
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
            writer.add_scalar(f"{prefix}{k}", float(v), step)
    writer.flush()
