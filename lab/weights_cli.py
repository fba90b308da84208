"""``v2a weights list|fetch`` and ``v2a check``: the weights manifest and the preflight, on the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from v2a.io import InputError
from v2a.weights import WeightError, entry_state, fetch, load_manifest, read_lock, weights_dir

log = logging.getLogger("v2a")

weights_app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="The checkpoints of the full run (manifest v2a/weights.yaml): list them, download what is missing.\n\n"
         "URL files go to the weights folder (default weights/ beside stages.yaml; V2A_WEIGHTS or --dir "
         "override it); Hugging Face entries go to the Hugging Face cache (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE).")

DIR_OPT = typer.Option(None, "--dir", "-d", help="Weights folder (default: $V2A_WEIGHTS, else weights/ beside "
                                                   "the first config file).")


def _config():
    """The loaded configuration when its files exist (for paths.weights / the root), else None."""
    from lab.session import STATE
    from v2a.defaults import load_chosen

    try:
        return load_chosen(STATE.config_files, STATE.overrides)
    except (FileNotFoundError, ValueError):  # weights commands work without a (valid) configuration
        return None


def _selected(names: list[str]) -> list:
    manifest = load_manifest()
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise typer.BadParameter(f"unknown weight(s) {unknown}; the manifest has: {', '.join(manifest)}")
    return [manifest[n] for n in names] if names else list(manifest.values())


@weights_app.command("list")
def list_weights(
    names: List[str] = typer.Argument(None, help="Entries to show (default: all)."),
    verify: bool = typer.Option(False, "--verify", help="Prove present files again: hash, checksum, format, "
                                "lock record (slow for GBs)."),
    dir_: Optional[Path] = DIR_OPT,
) -> None:
    """Print every manifest entry: missing, present (not proven), checked (proven by its format or its transfer; no
    checksum is published), verified (the published checksum matched) or corrupt; its source, size and checksum."""
    from lab.session import usage_error

    wdir = weights_dir(_config(), dir_)
    try:
        read_lock(wdir)
    except InputError as err:
        usage_error(err)
    typer.echo(f"weights folder: {wdir}")
    typer.echo(f"{'name':<18} {'state':<9} {'used by':<16} {'size':<12} {'checksum':<42} source")
    bad = 0
    for e in _selected(names or []):
        state, path = entry_state(e, wdir, verify=verify)
        bad += state.startswith("corrupt")
        typer.echo(f"{e.name:<18} {state.split(':')[0]:<9} {','.join(e.used_by):<16} "
                   f"{(str(e.size) if e.size else e.approx.split(' (')[0])[:12]:<12} {e.checksum[:42]:<42} {e.source}")
        if state.startswith("corrupt"):
            typer.echo(f"{'':<18} {state}: {path}")
    raise typer.Exit(1 if bad else 0)


@weights_app.command("fetch")
def fetch_weights(
    names: List[str] = typer.Argument(None, help="Entries to download (default: every missing one)."),
    dir_: Optional[Path] = DIR_OPT,
    retries: int = typer.Option(3, "--retries", help="Resume attempts after a dropped connection or a stall."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds to wait for the server to answer or to "
                                  "send the next bytes; longer counts as a dropped connection (resumed, --retries)."),
) -> None:
    """Download what is missing: progress bar, resume (HTTP Range), then rename into place only what is proven (the
    transfer complete, the published checksum, the file opening as the checkpoint it should be); the rest is kept
    aside as <file>.corrupt. A file already there is proven the same way first."""
    from lab.session import STATE, usage_error

    wdir = weights_dir(_config(), dir_)
    try:
        read_lock(wdir)  # a broken lock file: one error line, exit 2, before anything is downloaded
    except InputError as err:
        usage_error(err)
    failed = []
    for e in _selected(names or []):
        try:
            what, path = fetch(e, wdir, progress=STATE.progress, retries=retries, timeout=timeout)
            typer.echo(f"{e.name}: {what} ({path})")
        except WeightError as err:
            log.error("%s", err)
            failed.append(e.name)
    if failed:
        typer.echo(f"failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def check_command(
    targets: List[str] = typer.Argument(None, help="Stages or groups to check (default: every stage)."),
) -> None:
    """Preflight: inputs, every checkpoint (present, keys and shapes against the model built on the meta device),
    device needs. Prints every problem in one table; exits 1 when there is any."""
    from v2a.check import format_problems, preflight
    from lab.session import runner

    r = runner()
    names = r.cfg.closure(targets) if targets else r.cfg.order()
    problems = preflight(r.cfg, names)
    if problems:
        typer.echo(format_problems(problems))
        raise typer.Exit(1)
    typer.echo(f"check: {len(names)} stages ({', '.join(names)}): no problems")
