"""CLI commands for experiments and external evaluation: ``v2a experiments``, ``v2a ablations``, ``v2a evaluate``.

Registered on the main app by ``lab/cli.py`` (``register(app, state)``); ``v2a run TARGET --experiment NAME`` is
the ``run`` command's option.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer


log = logging.getLogger("v2a")

ERRORS = (RuntimeError, ValueError, FileNotFoundError)


def _fail(e: Exception) -> None:
    log.error("%s", e)
    raise typer.Exit(1)


def _choice(state):
    """The configuration files the CLI uses and their root (v2a/defaults.py: the packaged ones outside the repo)."""
    from v2a.defaults import choose_config

    return choose_config(state.config_files)


def register(app: typer.Typer, state) -> None:
    @app.command("experiments")
    def list_experiments() -> None:
        """List the named experiments (configs/experiments/NAME.yaml): done (every stage fresh), not run, or stale
        and why (the first stale stage)."""
        from lab.experiments import collect, presets, read_preset

        choice = _choice(state)
        try:
            known = presets(choice.files, state.overrides)
            for name in known:
                pre = read_preset(name, known)
                if pre.name != name:
                    typer.echo(f"{name:<16} = {pre.name}")
                    continue
                e = collect(choice.files, state.overrides, name, root=choice.root)
                typer.echo(f"{name:<16} {e['status']:<8} {pre.description}")
        except ERRORS as e:
            _fail(e)

    @app.command()
    def ablations(
        names: List[str] = typer.Argument(None, help="Experiments to run (default: every preset)."),
        report_only: bool = typer.Option(False, "--report-only", help="Write the report from what exists; run nothing."),
        workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (frames stage)."),
    ) -> None:
        """Run every experiment up to evaluate (finished ones are reused) and write one combined report
        (<outputs>/ablations/report.md, .csv, .json): rows = experiments, the paper's rows beside ours. A row has
        numbers only when its experiment is done (every stage fresh); a stale one is reported as stale."""
        from lab.experiments import ablations as run_all

        try:
            choice = _choice(state)
            res = run_all(choice.files, state.overrides, list(names or []) or None, run=not report_only,
                          root=choice.root, workers=workers, progress=state.progress)
        except ERRORS as e:
            _fail(e)
        typer.echo(f"report: {res['files']['report']}")
        if res["errors"]:
            typer.echo(f"failed: {', '.join(res['errors'])} (reasons in the report)")
            raise typer.Exit(1)

    @app.command("evaluate")
    def evaluate_cmd(
        pred: Path = typer.Option(..., "--pred", help="Folder of generated audio (.wav/.flac), one file per clip."),
        gt: Path = typer.Option(..., "--gt", help="Folder of the ground truth, matched to --pred by file stem: audio "
                                "(.wav/.flac) or the source videos (their audio read as the evaluate stage reads it)."),
        video: Optional[Path] = typer.Option(None, "--video", help="Folder of the videos (IB-score, DeSync); default: "
                                             "--gt when it holds videos."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default <outputs>/evaluate-<pred>)."),
    ) -> None:
        """Score any folder of audio with the evaluate stage's protocol (stages.evaluate.params: models, 8 s crop).

        Writes metrics.json, per_clip.csv, table.md (our row named after the --pred folder), unmatched.csv (stems
        not on both sides) and a gallery.
        """
        from scoring.folders import evaluate_folders
        from scoring.report import TABLE_COLUMNS, random_weights
        from v2a.defaults import load_chosen

        try:
            cfg = load_chosen(state.config_files, state.overrides)
            dest = out or cfg.folder_evaluation_dir(pred)
            params = cfg.stage("evaluate").settings
            res = evaluate_folders(params, pred, gt, dest, video)
        except ERRORS as e:
            _fail(e)
        m = res["metrics"]
        shown = [f"{col} {m[k]['value']:.4g}" if m[k].get("status") == "ok" else f"{col} {m[k].get('status')}"
                 for col, k in TABLE_COLUMNS]
        missing = ", ".join(f"{n} without {k}" for k, n in res["unmatched"].items() if n) or "none"
        typer.echo(f"{pred}: {res['counts']['clips']} scored against {gt}; unmatched: {missing}")
        typer.echo("  ".join(shown))
        mark = random_weights(params.model)
        if mark:
            typer.echo(f"{mark}: the evaluation networks are not the released ones; these numbers measure nothing")
        typer.echo(f"table: {Path(res['files']['table'])}")
