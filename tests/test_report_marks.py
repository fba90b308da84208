"""Reports say when their numbers come from random evaluation networks, wherever ours stand under the paper's."""

from __future__ import annotations

import csv
import io

from scoring.report import (PAPER_ROW, TABLE_COLUMNS, combined_csv, combined_markdown, markdown_table,
                            system_label)


def _metrics(value: float) -> dict:
    return {k: {"status": "ok", "value": value, "n_clips": 4} for _, k in TABLE_COLUMNS}


def _entry(name: str, model: str | None) -> dict:
    metrics = None if model is None else {"metrics": _metrics(0.5), "params": {"model": model}}
    return {"name": name, "status": "done" if model else "not run", "metrics": metrics, "train": None,
            "paper": [{"table": 2, "row": "CAVP"}], "dynamics": [{"epoch": 1, "ib_score": 0.1}] if model else None}


def test_table_marks_random_weights_and_names_our_row():
    tiny = markdown_table(_metrics(0.08), 4, model="tiny")
    lines = tiny.splitlines()
    assert lines[0] == "# Evaluation: RANDOM WEIGHTS (tiny)" and "not comparable with the paper's" in lines[2]
    paper = next(i for i, line in enumerate(lines) if line.startswith("| MFM-Mapper (quoted"))
    assert lines[paper + 1].startswith("| Ours (this run, 4 clips) **RANDOM WEIGHTS (tiny)** | 0.08 |")
    assert f"| {PAPER_ROW['fd_passt']:.2f} |" in lines[paper]
    full = markdown_table(_metrics(0.08), 4, model="full")
    assert "RANDOM" not in full and full.startswith("# Evaluation\n") and "| Ours (this run, 4 clips) | 0.08 |" in full
    assert "RANDOM WEIGHTS (random-full)" in markdown_table(_metrics(1.0), 4, model="random-full")


def test_our_row_is_named_after_what_was_scored():
    counts = {"counts": {"clips": 3}}
    assert system_label({**counts, "source": {"pred": "/data/other_system/"}}) == "`other_system` (--pred folder, 3 clips)"
    assert system_label({**counts, "experiment": "cavp-only"}) == "cavp-only (this run, 3 clips)"
    assert system_label(counts) == "Ours (this run, 3 clips)"


def test_combined_report_marks_every_random_row():
    entries = [_entry("tiny-run", "tiny"), _entry("real-run", "full"), _entry("not-yet", None)]
    text = combined_markdown(entries)
    assert text.startswith("# Ablations: RANDOM WEIGHTS\n") and "`tiny`" in text
    ours = [line for line in text.splitlines() if "tiny-run" in line and "0.50" in line]
    assert len(ours) == 2 and all("**RANDOM WEIGHTS (tiny)**" in line for line in ours)  # "All experiments", Table 2
    assert "| tiny-run **RANDOM WEIGHTS (tiny)** | 1 |" in text  # the dynamics row
    real = [line for line in text.splitlines() if "real-run" in line]
    assert real and not any("RANDOM" in line for line in real)
    assert "| **not-yet** (ours) | not run |" in text
    rows = {r["experiment"]: r for r in csv.DictReader(io.StringIO(combined_csv(entries)))}
    assert (rows["tiny-run"]["eval_model"], rows["real-run"]["eval_model"], rows["not-yet"]["eval_model"]) == \
        ("tiny", "full", "")
    assert "RANDOM" not in combined_markdown([_entry("real-run", "full")])
