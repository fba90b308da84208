"""Write the evaluation outputs: metrics JSON, per-clip CSV and a markdown table in the layout of Table 1."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from v2a.io import atomic_write_json, atomic_write_text

# Column order of the paper's Table 1 and our metric keys.
TABLE_COLUMNS = [
    ("FD_PaSST", "fd_passt"), ("FD_PANNs", "fd_panns"), ("FD_VGG", "fd_vgg"), ("KL_PANNs", "kl_panns"),
    ("KL_PaSST", "kl_passt"), ("IS", "is_panns"), ("IB-score", "ib_score"), ("DeSync", "desync"),
]
# MFM-Mapper (8,000 h, 124M), Table 1 of the paper, quoted verbatim.
PAPER_ROW = {"fd_passt": 111.74, "fd_panns": 9.90, "fd_vgg": 1.74, "kl_panns": 2.26, "kl_passt": 2.23,
             "is_panns": 12.22, "ib_score": 26.07, "desync": 1.073}
# Where av-benchmark's reading of the files (followed here) differs from "the first 8 s" of the paper's protocol.
PROTOCOL_NOTES = [
    "Inputs are prepared as av-benchmark does (scoring/audio.py): every file is read whole at its own rate; "
    "FD/KL/IS and DeSync use its first {s:g} s after resampling (torchaudio's Resample: 16 kHz for PANNs, VGGish "
    "and Synchformer, 32 kHz for PaSST, read again from the file).",
    "IB-score: av-benchmark's ImageBind audio is the whole generated file, not the {s:g} s crop: its three 2 s clips "
    "are spread over the whole duration (0/4/8 s for 10 s, 0/4.12/8.24 s for 10.24 s; 0/3/6 s for an 8 s crop).",
    "DC offset: removed over the whole file before resampling (PANNs, VGGish, PaSST), not over the crop.",
    "Ground truth: the source file itself (whole, native rate, every channel) when it is on disk; else the frames "
    "cache (16 kHz, channel 0, first 10 s).",
]
CSV_COLUMNS = ["clip_id", "status", "reason", "gen_seconds", "gt_seconds", "short", "vggish_examples",
               "kl_panns", "kl_passt", "ib_score", "desync"]


def _cell(m: dict) -> str:
    if m.get("status") == "ok":
        return f"{m['value']:.3f}" if m.get("key") == "desync" else f"{m['value']:.2f}"
    return m.get("status", "?")


def markdown_table(metrics: dict, n_clips: int, title: str = "Evaluation", seconds: float = 8.0) -> str:
    head = "| Method | " + " | ".join(c for c, _ in TABLE_COLUMNS) + " |"
    sep = "| --- |" + " ---: |" * len(TABLE_COLUMNS)
    paper = "| MFM-Mapper (quoted from the paper, Table 1; VGGSound test) | " + " | ".join(
        f"{PAPER_ROW[k]:.3f}" if k == "desync" else f"{PAPER_ROW[k]:.2f}" for _, k in TABLE_COLUMNS) + " |"
    ours = f"| Ours (this run, {n_clips} clips) | " + " | ".join(
        _cell({**metrics[k], "key": k}) for _, k in TABLE_COLUMNS) + " |"
    lines = [f"# {title}", "", head, sep, paper, ours, "",
             "Lower is better for FD, KL and DeSync; higher for IS and IB-score. "
             f"Audio cropped to {seconds:g} s (the protocol uses 8 s).", "",
             "| Metric | Status | Clips used | Note |", "| --- | --- | ---: | --- |"]
    for col, key in TABLE_COLUMNS:
        m = metrics[key]
        used = m.get("n_clips", 0)
        if "n_gt" in m:
            used = f"{m.get('n_gen', 0)} gen / {m['n_gt']} gt"
        note = m.get("reason") or m.get("note") or ""
        left_out = [f"{m[k]} {label}" for k, label in (("n_failed", "failed (see per_clip.csv)"),
                                                      ("n_excluded_short", "excluded: shorter than 8 s"),
                                                      ("n_no_video", "without video")) if m.get(k)]
        note = "; ".join([note] * bool(note) + left_out)
        lines.append(f"| {col} | {m['status']} | {used} | {note} |")
    lines += ["", "Protocol notes:", ""] + [f"- {n.format(s=seconds)}" for n in PROTOCOL_NOTES]
    return "\n".join(lines) + "\n"


def per_clip_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def write_outputs(out_dir: Path, result: dict, rows: list[dict]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"metrics": out_dir / "metrics.json", "per_clip": out_dir / "per_clip.csv",
             "table": out_dir / "table.md"}
    atomic_write_text(paths["per_clip"], per_clip_csv(rows))
    atomic_write_text(paths["table"], markdown_table(result["metrics"], result["counts"]["clips"],
                                                      seconds=result.get("params", {}).get("seconds", 8.0)))
    atomic_write_json(paths["metrics"], result)  # written last: its presence says the run completed
    return paths
