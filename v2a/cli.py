"""The ``v2a`` command line: one entry point for every stage (logging is configured here, once)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, NoReturn, Optional

import typer

from v2a.config import load_config
from v2a.runner import Runner
from v2a.schema import ConfigError
from v2a.weights_cli import check_command, weights_app

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    help="MFM-Mapper video-to-audio: extract features, train the GPT-2 mapper, generate sound for videos.\n\n"
         "Every path and parameter comes from stages.yaml (overlay more files with -c, e.g. -c configs/demo.yaml).",
)
log = logging.getLogger("v2a")
app.add_typer(weights_app, name="weights")
app.command("check")(check_command)


class State:
    config_files: list[str] = ["stages.yaml"]
    overrides: list[str] = []
    progress: bool = True


STATE = State()


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "huggingface_hub", "numcodecs", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@app.callback()
def main(
    config: List[str] = typer.Option(["stages.yaml"], "--config", "-c", help="Config files, merged in order."),
    set_: List[str] = typer.Option([], "--set", help="Override one value: stages.cavp.runtime.batch_size=16"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    _setup_logging(verbose, quiet)
    STATE.config_files = list(config)
    STATE.overrides = list(set_)
    STATE.progress = not no_progress


def _usage_error(e: Exception) -> NoReturn:
    """A configuration or command-line mistake: one ``error:`` line per problem, exit code 2, no traceback."""
    for line in getattr(e, "problems", None) or [str(e)]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def _runner(targets: list[str] | None = None, experiment: str | None = None) -> Runner:
    """The runner on the validated configuration (v2a/schema.py), or on the named experiment's
    (v2a/experiments.py); ``targets`` must name stages or groups."""
    try:
        if experiment:
            from v2a.experiments import experiment_config, write_identity

            cfg, preset = experiment_config(STATE.config_files, STATE.overrides, experiment)
            write_identity(cfg, preset, STATE.config_files, STATE.overrides)
            r = Runner(cfg)
        else:
            r = Runner(load_config(STATE.config_files, STATE.overrides))
        r.cfg.closure(targets or [])
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _usage_error(e)
    return r


EXPERIMENT_HELP = ("A named experiment (configs/experiments/NAME.yaml; `v2a experiments` lists them): its own "
                   "runs/NAME/ and outputs/NAME/, the shared feature cache.")


def _fail(e: Exception) -> NoReturn:
    log.error("%s", e)
    raise typer.Exit(1)


@app.command()
def status(experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help=EXPERIMENT_HELP)) -> None:
    """Print every stage as fresh or stale, and why; then each missing input and weight (exit code 1 when one is)."""
    from v2a.check import missing_weights

    r = _runner(experiment=experiment)
    for name in r.cfg.order():
        try:
            fresh, reasons = r.status(name)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            fresh, reasons = False, [f"cannot tell: {e}"]
        state = "fresh" if fresh else "stale"
        typer.echo(f"{name:<10} {state:<6} {r.fingerprint(name).value}  {'' if fresh else '; '.join(reasons)}")
    problems = r.problems()
    problems += [f"{name}: {p}" for name in r.cfg.order() for p in missing_weights(r.cfg, name)]
    for line in problems:
        typer.echo(f"problem: {line}")
    if problems:
        typer.echo("`v2a check` lists every problem, `v2a weights fetch` downloads the weights", err=True)
        raise typer.Exit(1)


@app.command("run")
def run_targets(
    targets: List[str] = typer.Argument(..., help="Stages or groups (extract, train, generate, evaluate)."),
    force: bool = typer.Option(False, "--force", help="Rerun the named stages even when fresh."),
    workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (frames stage)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help=EXPERIMENT_HELP),
) -> None:
    """Run the targets and every stale stage upstream of them, in order; fresh stages are skipped."""
    r = _runner(targets, experiment)
    try:
        ran = r.run(targets, force=force, workers=workers, progress=STATE.progress)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"ran: {', '.join(ran) if ran else 'nothing (all up to date)'}")


@app.command()
def stage(
    name: str = typer.Argument(..., help="Stage name, e.g. frames, cavp, timechat, audiomae, train, generate."),
    force: bool = typer.Option(False, "--force", help="Rerun even when fresh (discards its previous output)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (frames stage)."),
) -> None:
    """Run one stage alone (its upstream stages must be fresh). RANK/WORLD_SIZE split the work across machines."""
    r = _runner([name])
    try:
        ran = r.run([name], force=force, only=True, workers=workers, progress=STATE.progress)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"ran: {', '.join(ran) if ran else f'nothing ({name} is up to date; --force reruns it)'}")


@app.command()
def generate(
    videos: List[Path] = typer.Argument(None, help="Video files or folders. None: the generate stage on the cache."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default <outputs>/videos)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Text prompt, e.g. the class 'dog barking'."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Clips per AudioLDM-2 call."),
    force: bool = typer.Option(False, "--force", help="Stage mode: regenerate clips already done."),
    whole: bool = typer.Option(False, "--whole", help="Cover the whole video (10 s segments), not its first 10 s."),
) -> None:
    """Generate sound: for the cache's test split (no arguments) or for any videos given here.

    Per clip: <id>.wav (16 kHz), the video with its new soundtrack (video stream copied), <id>.png spectrograms.
    """
    r = _runner()
    try:
        if not videos:
            ran = r.run(["generate"], force=force, progress=STATE.progress)
            typer.echo(f"ran: {', '.join(ran) if ran else 'nothing (generate is up to date)'}")
            return
        from infer.videos import generate_videos

        dest = out or r.cfg.path("outputs") / "videos"
        done = generate_videos(r.cfg, list(videos), dest, prompt=prompt, batch_size=batch_size,
                               progress=STATE.progress, whole=whole)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        _fail(e)
    for rec in done:
        typer.echo(f"{rec['id']}: {rec['wav']} {rec.get('video', '(no video: ' + rec.get('video_error', '') + ')')} "
                   f"{rec['png']}")
    typer.echo(f"wrote {len(done)} clips to {dest}")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(Path("data/demo"), help="Folder for the synthetic clips and labels.csv."),
    n: int = typer.Option(12, "--n", help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Write N short synthetic clips with matched sound (a flashing shape + a click) and a VGGSound-style CSV."""
    from pipeline.demo_data import make_demo_clips

    specs = make_demo_clips(out, n=n, seed=seed)
    typer.echo(f"wrote {len(specs)} clips to {out}")


from v2a.cli_experiments import register  # noqa: E402  (v2a experiments, ablations, evaluate)

register(app, STATE)

if __name__ == "__main__":
    from v2a import cli as _cli  # one module instance: v2a/weights_cli.py reads v2a.cli.STATE

    _cli.app()
