"""Write the evaluation outputs: metrics JSON, per-clip CSV and a markdown table in the layout of Table 1.

Numbers measured with random evaluation networks (``stages.evaluate.params.model`` tiny or random-full: the demo
and the tests) say so: in the table's title, in a note under it, and beside every row of ours that stands under
the paper's rows (table.md, the combined ablation report). Such numbers only show that the chain runs.
"""

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
RANDOM_NOTE = ("**Random weights**: the evaluation networks are `{model}` (seeded random, not the released "
               "checkpoints), so these numbers measure nothing about the sound and are not comparable with the "
               "paper's; they only show that the chain runs.")
CSV_COLUMNS = ["clip_id", "status", "reason", "gen_seconds", "gt_seconds", "short", "vggish_examples",
               "kl_panns", "kl_passt", "ib_score", "desync"]


def _cell(m: dict) -> str:
    if m.get("status") == "ok":
        return f"{m['value']:.3f}" if m.get("key") == "desync" else f"{m['value']:.2f}"
    return m.get("status", "?")


def random_weights(model: str | None) -> str | None:
    """The mark for numbers made with random evaluation networks (``model`` tiny / random-full), else None."""
    return None if model in (None, "full") else f"RANDOM WEIGHTS ({model})"


def system_label(result: dict) -> str:
    """Our row's name in table.md: the ``--pred`` folder (``v2a evaluate``), the experiment, or this run."""
    n = result["counts"]["clips"]
    pred = (result.get("source") or {}).get("pred")
    if pred:
        return f"`{Path(pred).name or pred}` (--pred folder, {n} clips)"
    return f"{result.get('experiment') or 'Ours'} (this run, {n} clips)"


def markdown_table(metrics: dict, n_clips: int, title: str = "Evaluation", seconds: float = 8.0,
                   label: str | None = None, model: str | None = "full") -> str:
    """Table 1's layout: the paper's row, then ours (``label``, default ``Ours (this run, N clips)``), marked when
    ``model`` (the evaluation networks) is random; then what each metric used, and the protocol notes."""
    mark = random_weights(model)
    head = "| Method | " + " | ".join(c for c, _ in TABLE_COLUMNS) + " |"
    sep = "| --- |" + " ---: |" * len(TABLE_COLUMNS)
    paper = "| MFM-Mapper (quoted from the paper, Table 1; VGGSound test) | " + " | ".join(
        f"{PAPER_ROW[k]:.3f}" if k == "desync" else f"{PAPER_ROW[k]:.2f}" for _, k in TABLE_COLUMNS) + " |"
    name = (label or f"Ours (this run, {n_clips} clips)") + (f" **{mark}**" if mark else "")
    ours = f"| {name} | " + " | ".join(_cell({**metrics[k], "key": k}) for _, k in TABLE_COLUMNS) + " |"
    lines = [f"# {title}" + (f": {mark}" if mark else ""), ""]
    if mark:
        lines += [RANDOM_NOTE.format(model=model), ""]
    lines += [head, sep, paper, ours, "",
              "Lower is better for FD, KL and DeSync; higher for IS and IB-score. "
              f"Audio cropped to {seconds:g} s (the protocol uses 8 s).", "",
              "| Metric | Status | Clips used | Note |", "| --- | --- | ---: | --- |"]
    for col, key in TABLE_COLUMNS:
        m = metrics[key]
        used = m.get("n_clips", 0)
        if "n_gt" in m:
            used = f"{m.get('n_gen', 0)} gen / {m['n_gt']} gt"
        note = m.get("reason") or m.get("note") or ""
        left_out = [f"{m[k]} {what}" for k, what in (("n_failed", "failed (see per_clip.csv)"),
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
    params = result.get("params", {})
    atomic_write_text(paths["table"], markdown_table(result["metrics"], result["counts"]["clips"],
                                                      seconds=params.get("seconds", 8.0), label=system_label(result),
                                                      model=params.get("model", "full")))
    atomic_write_json(paths["metrics"], result)  # written last: its presence says the run completed
    return paths


# --- the combined report of the experiments (lab/experiments.py, `make ablations`) ---------------------------------
# The paper's own rows, quoted verbatim (Tables 1-3). Table 2's "CAVP+TimeChat" and Table 3's "Channel-wise + proj"
# repeat Table 1's MFM-Mapper numbers: the same run.
PAPER_TABLES = {
    1: {"title": "Table 1: VGGSound test (40% of VGGSound for training)",
        "columns": ["scale", "params"] + [k for _, k in TABLE_COLUMNS],
        "rows": {"MFM-Mapper": {"scale": 8000.0, "params": 124e6, **PAPER_ROW},
                 "MFM-Mapper-M": {"scale": 20000.0, "params": 124e6, "fd_passt": 94.26, "fd_panns": 8.49,
                                  "fd_vgg": 0.95, "kl_panns": 2.23, "kl_passt": 2.16, "is_panns": 10.58,
                                  "ib_score": 25.68, "desync": 1.077},
                 # quoted by the paper from MMAudio (the baseline our V2A-Mapper experiment reimplements)
                 "V2A-Mapper": {"scale": 50000.0, "params": 48.83e6, "fd_passt": 84.57, "fd_panns": 8.40,
                                "fd_vgg": 0.84, "kl_panns": 2.69, "kl_passt": 2.56, "is_panns": 12.47,
                                "ib_score": 22.58, "desync": 1.225}}},
    2: {"title": "Table 2: visual encoders", "columns": ["fd_passt", "is_panns", "ib_score", "desync"],
        "rows": {"CAVP+TimeChat": {"fd_passt": 111.74, "is_panns": 12.22, "ib_score": 26.07, "desync": 1.073},
                 "CAVP": {"fd_passt": 123.26, "is_panns": 11.46, "ib_score": 22.01, "desync": 1.086},
                 "TimeChat": {"fd_passt": 124.24, "is_panns": 12.08, "ib_score": 25.52, "desync": 1.162}}},
    3: {"title": "Table 3: fusion methods", "columns": ["fd_passt", "is_panns", "ib_score", "desync"],
        "rows": {"Channel-wise + proj": {"fd_passt": 111.74, "is_panns": 12.22, "ib_score": 26.07, "desync": 1.073},
                 "Add": {"fd_passt": 113.58, "is_panns": 12.33, "ib_score": 26.00, "desync": 1.091},
                 "Cat": {"fd_passt": 112.23, "is_panns": 12.24, "ib_score": 24.73, "desync": 1.120}}},
}
COLUMN_NAMES = {"scale": "Scale", "params": "Param.", **{k: c for c, k in TABLE_COLUMNS}}


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key == "scale":
        return f"{v:,.0f}h" if v >= 100 else f"{v:.3g}h"
    if key == "params":
        return f"{v / 1e6:.4g}M" if v >= 1e5 else f"{v / 1e3:.4g}K"
    return f"{v:.3f}" if key == "desync" else f"{v:.2f}"


def experiment_values(entry: dict) -> dict[str, tuple[str, str]]:
    """{column: (cell, clips used)} of one experiment: Scale and Param. from its run, metrics from its evaluation."""
    out: dict[str, tuple[str, str]] = {}
    train = entry.get("train") or {}
    out["scale"] = (_fmt("scale", train.get("scale_hours")),
                    f"{train['train_clips']} clips x {train.get('epochs_done')} epochs" if "train_clips" in train else "")
    out["params"] = (_fmt("params", train.get("trainable_params")), "")
    metrics = (entry.get("metrics") or {}).get("metrics") or {}
    for _, key in TABLE_COLUMNS:
        m = metrics.get(key)
        if m is None:
            out[key] = ("-", "")
            continue
        cell = _fmt(key, m["value"]) if m.get("status") == "ok" else m.get("status", "?")
        used = f"{m.get('n_gen', 0)} gen / {m['n_gt']} gt" if "n_gt" in m else str(m.get("n_clips", ""))
        out[key] = (cell, used)
    return out


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def entry_model(entry: dict) -> str | None:
    """The evaluation networks (``params.model``) an experiment's numbers were measured with; None: no numbers."""
    return ((entry.get("metrics") or {}).get("params") or {}).get("model")


def combined_markdown(entries: list[dict], title: str = "Ablations") -> str:
    """Rows = experiments (ours, then the paper's quoted rows they reproduce); per-table sections; clips used.
    Every row of ours measured with random evaluation networks carries the mark (and so does the title)."""
    cols = ["scale", "params"] + [k for _, k in TABLE_COLUMNS]
    vals = {e["name"]: experiment_values(e) for e in entries}
    marks = {e["name"]: random_weights(entry_model(e)) for e in entries}
    mark = lambda name: f" **{marks[name]}**" if marks[name] else ""  # noqa: E731
    randoms = sorted({entry_model(e) for e in entries if marks[e["name"]]})
    lines = [f"# {title}" + (": RANDOM WEIGHTS" if randoms else ""), ""]
    if randoms:
        lines += [RANDOM_NOTE.format(model="/".join(randoms)) + " Rows marked RANDOM WEIGHTS are such runs; with "
                  "random evaluation networks, different experiments may well give the same numbers.", ""]
    lines += ["Ours: this configuration's runs (`runs/NAME/`, `outputs/NAME/`); paper: quoted "
              "verbatim. Scale = training audio hours x epochs, Param. = trainable parameters, both read from the "
              "run. Lower is better for FD, KL and DeSync; higher for IS and IB-score.", "",
              "## All experiments", "", _row(["Experiment", "Status"] + [COLUMN_NAMES[c] for c in cols]),
              "| --- | --- |" + " ---: |" * len(cols)]
    for e in entries:
        lines.append(_row([f"**{e['name']}** (ours){mark(e['name'])}", e["status"]] +
                          [vals[e["name"]][c][0] for c in cols]))
        for ref in e.get("paper") or []:
            row = PAPER_TABLES.get(int(ref["table"]), {}).get("rows", {}).get(ref["row"])
            if row is not None:
                lines.append(_row([f"paper, Table {ref['table']}: {ref['row']}", "quoted"] +
                                  [_fmt(c, row.get(c)) if c in row else "" for c in cols]))
    for t, table in PAPER_TABLES.items():
        lines += ["", f"## {table['title']}", "", _row(["Row", "Source"] + [COLUMN_NAMES[c] for c in table["columns"]]),
                  "| --- | --- |" + " ---: |" * len(table["columns"])]
        for row_name, paper in table["rows"].items():
            lines.append(_row([row_name, "paper"] + [_fmt(c, paper.get(c)) for c in table["columns"]]))
            for e in entries:
                if any(int(r["table"]) == t and r["row"] == row_name for r in e.get("paper") or []):
                    lines.append(_row([row_name, f"ours: {e['name']}{mark(e['name'])}"] +
                                      [vals[e["name"]][c][0] for c in table["columns"]]))
    curves = [e for e in entries if e.get("dynamics")]
    if curves:
        lines += ["", "## Training dynamics (Fig. 3; dynamics.png)", "",
                  "| Experiment | Epoch | IB-score | DeSync | FD_PaSST |", "| --- | ---: | ---: | ---: | ---: |"]
        for e in curves:
            for r in e["dynamics"]:
                lines.append(_row([e["name"] + mark(e["name"]), str(r["epoch"])] +
                                  [_fmt(k, r.get(k)) for k in ("ib_score", "desync", "fd_passt")]))
    lines += ["", "## Clips each number used", "", _row(["Experiment"] + [COLUMN_NAMES[c] for c in cols]),
              "| --- |" + " ---: |" * len(cols)]
    for e in entries:
        lines.append(_row([e["name"]] + [vals[e["name"]][c][1] for c in cols]))
    return "\n".join(lines) + "\n"


def combined_csv(entries: list[dict]) -> str:
    buf = io.StringIO()
    keys = [k for _, k in TABLE_COLUMNS]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "status", "epochs", "train_clips", "scale_hours", "trainable_params", *keys,
                *(f"{k}_clips" for k in keys), "paper_rows", "eval_model"])
    for e in entries:
        train = e.get("train") or {}
        metrics = (e.get("metrics") or {}).get("metrics") or {}
        value = lambda k: metrics.get(k, {}).get("value") if metrics.get(k, {}).get("status") == "ok" else ""  # noqa: E731
        used = [experiment_values(e)[k][1] for k in keys]
        w.writerow([e["name"], e["status"], e.get("epochs", ""), train.get("train_clips", ""),
                    train.get("scale_hours", ""), train.get("trainable_params", ""), *[value(k) for k in keys],
                    *used, "; ".join(f"Table {r['table']}: {r['row']}" for r in e.get("paper") or []),
                    entry_model(e) or ""])
    return buf.getvalue()


def write_combined(out_dir: Path, entries: list[dict]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"report": out_dir / "report.md", "csv": out_dir / "report.csv", "json": out_dir / "report.json"}
    atomic_write_text(paths["report"], combined_markdown(entries))
    atomic_write_text(paths["csv"], combined_csv(entries))
    atomic_write_json(paths["json"], {"experiments": entries, "paper_tables": PAPER_TABLES})
    return paths
