"""What every ``v2a`` command shares: the options of the top-level callback (``STATE``), logging, the runner on
the chosen configuration, and the one-line error exits (2: a usage or configuration mistake, 1: a failure)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import typer

from v2a.config import load_config
from v2a.defaults import choose_config
from v2a.io import InputError, folder_problem
from v2a.runner import Runner
from v2a.schema import ConfigError

log = logging.getLogger("v2a")


class State:
    config_files: list[str] = []
    overrides: list[str] = []
    wants_progress: bool = True  # False: --no-progress
    configured: bool = True  # False: no stages.yaml here and no -c (the packaged default)

    @property
    def progress(self) -> bool:
        """Progress bars only when wanted and stderr is a terminal: a redirected log gets no tqdm lines."""
        return self.wants_progress and sys.stderr.isatty()

    @progress.setter
    def progress(self, wanted: bool) -> None:
        self.wants_progress = wanted


STATE = State()


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "huggingface_hub", "numcodecs", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def usage_error(e: Exception) -> NoReturn:
    """A configuration or command-line mistake: one ``error:`` line per problem, exit code 2, no traceback."""
    for line in getattr(e, "problems", None) or [str(e)]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def output_folder(path: Path | None, what: str) -> None:
    """A folder named on the command line (``--out``) that is a file, lies inside one or cannot be written: one
    ``error:`` line naming it, exit code 2, before anything is read or written."""
    problem = folder_problem(path, what) if path is not None else None
    if problem:
        usage_error(ValueError(problem))


def runner(targets: list[str] | None = None, experiment: str | None = None) -> Runner:
    """The runner on the validated configuration (v2a/schema.py; the packaged one when no stages.yaml is here),
    or on the named experiment's (lab/experiments.py); ``targets`` must name stages or groups."""
    choice = choose_config(STATE.config_files)
    STATE.configured = choice.configured
    try:
        if experiment:  # nothing is written here: experiment.json comes after a run (run_targets)
            from lab.experiments import experiment_config

            r = Runner(experiment_config(choice.files, STATE.overrides, experiment, root=choice.root)[0])
        else:
            r = Runner(load_config(choice.files, STATE.overrides, root=choice.root))
        r.cfg.closure(targets or [])
        if targets:  # a command that runs stages: not a plain run into an experiment's folders
            from lab.experiments import check_not_an_experiment

            check_not_an_experiment(r.cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        usage_error(e)
    return r


def run_stages(r: Runner, targets: list[str], **kw) -> list[str]:
    """``r.run(targets)``; for an experiment's runner, then its experiment.json (lab/experiments.py: run_in)."""
    if r.cfg.experiment is None:
        return r.run(targets, **kw)
    from lab.experiments import run_in

    return run_in(r, choose_config(STATE.config_files).files, STATE.overrides, targets, **kw)


def fail(e: Exception) -> NoReturn:
    """A command that stopped: a user's mistake (a malformed input table or list, a configuration error found late)
    is a usage error (exit code 2, ``error:`` lines); anything else is a failure (logged, exit code 1)."""
    if isinstance(e, (InputError, ConfigError)):
        usage_error(e)
    log.error("%s", e)
    raise typer.Exit(1)
