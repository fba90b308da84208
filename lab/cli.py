"""The ``v2a`` command line: one entry point for every stage (logging is configured here, once)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from lab.session import STATE, fail, output_folder, run_stages, runner, setup_logging
from lab.weights_cli import check_command, weights_app

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    help="MFM-Mapper video-to-audio: extract features, train the GPT-2 mapper, generate sound for videos.\n\n"
         "Every path and parameter comes from stages.yaml (overlay more files with -c, e.g. -c configs/demo.yaml); "
         "without one in the working folder the packaged stages.yaml is used (-c demo: the packaged demo overlay).",
)
log = logging.getLogger("v2a")
app.add_typer(weights_app, name="weights")
app.command("check")(check_command)


@app.callback()
def main(
    config: List[str] = typer.Option([], "--config", "-c", help="Config files, merged in order (default: "
                                     "./stages.yaml, else the packaged one; 'demo' names the packaged demo overlay)."),
    set_: List[str] = typer.Option([], "--set", help="Override one value: stages.cavp.runtime.batch_size=16"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    setup_logging(verbose, quiet)
    STATE.config_files = list(config)
    STATE.overrides = list(set_)
    STATE.progress = not no_progress


EXPERIMENT_HELP = ("A named experiment (configs/experiments/NAME.yaml; `v2a experiments` lists them): its own "
                   "runs/NAME/ and outputs/NAME/, the shared feature cache.")


@app.command()
def status(experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help=EXPERIMENT_HELP)) -> None:
    """Print every stage as fresh, stale (and why) or not used; then each missing input and weight of the stages
    used (exit code 1 when one is). A stage is used when the chain's last stages need it (Config.used_stages)."""
    from v2a.check import missing_weights

    r = runner(experiment=experiment)
    used = r.cfg.used_stages()
    ends = ", ".join(n for n in used if not any(n in r.cfg.stage(m).needs for m in used))
    for name in r.cfg.order():
        if name not in used:
            typer.echo(f"{name:<10} {'not used':<8} {'-':<16}  {ends} does not need it")
            continue
        try:
            fresh, reasons = r.status(name)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            fresh, reasons = False, [f"cannot tell: {e}"]
        state = "fresh" if fresh else "stale"
        typer.echo(f"{name:<10} {state:<8} {r.fingerprint(name).value}  {'' if fresh else '; '.join(reasons)}")
    problems = r.problems(used)
    problems += [f"{name}: {p}" for name in used for p in missing_weights(r.cfg, name)]
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
    r = runner(targets, experiment)
    try:
        ran = run_stages(r, targets, force=force, workers=workers, progress=STATE.progress)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(f"ran: {', '.join(ran) if ran else 'nothing (all up to date)'}")


@app.command()
def stage(
    name: str = typer.Argument(..., help="Stage name, e.g. frames, cavp, timechat, audiomae, train, generate."),
    force: bool = typer.Option(False, "--force", help="Rerun even when fresh (discards its previous output)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (frames stage)."),
) -> None:
    """Run one stage alone (its upstream stages must be fresh). RANK/WORLD_SIZE split the work across machines."""
    r = runner([name])
    try:
        ran = r.run([name], force=force, only=True, workers=workers, progress=STATE.progress)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(f"ran: {', '.join(ran) if ran else f'nothing ({name} is up to date; --force reruns it)'}")


@app.command()
def generate(
    videos: List[Path] = typer.Argument(None, help="Video files or folders. None: the generate stage on the cache."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default <outputs>/videos)."),
    mapper: Optional[str] = typer.Option(None, "--mapper", "-m", help="An exported pipeline folder or hub id "
                                         "(v2a export); default: the trained run (runs/mapper)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Text prompt, e.g. the class 'dog barking'. "
                                         "Default 'auto': each video's best VGGSound class by CLIP zero-shot (top 3 "
                                         "printed and kept in its json); '' for no prompt."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="Default: 'low quality, "
                                                  "average quality' (the mapper's generation defaults)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed (default 0); clip c uses a seed derived "
                                       "from it and c's name."),
    steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps (paper: 100)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance (paper: 3.5)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds of sound (default 10.24: one "
                                             "window; longer: overlapping windows; never longer than the video)."),
    whole: bool = typer.Option(False, "--whole", help="The whole video: overlapping 10 s windows, crossfaded."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Windows per AudioLDM-2 call."),
    force: bool = typer.Option(False, "--force", help="Stage mode: regenerate clips already done."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Files: redo clips already complete in the output "
                                   "folder (default: skip them, so a killed run resumes)."),
) -> None:
    """Generate sound: for the cache's test split (no arguments) or for any videos given here.

    Per clip: <id>.wav (16 kHz), the video with its new soundtrack (video stream copied), <id>.png spectrograms,
    <id>.json (written last). Clips already complete for the same settings are skipped; unusable files are listed
    in rejects.csv; the last line counts done / skipped / rejected.
    """
    from lab.commands import generate_command

    r = runner()
    output_folder(out, "the output folder (--out)")
    try:
        generate_command(r, list(videos or []), out=out, mapper=mapper, configured=STATE.configured, prompt=prompt,
                         negative_prompt=negative_prompt, seed=seed, steps=steps, guidance=guidance,
                         duration=duration, whole=whole, batch_size=batch_size, force=force, progress=STATE.progress,
                         overwrite=overwrite)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        fail(e)


@app.command()
def export(
    out_dir: Path = typer.Argument(..., help="Folder to write (a hub-repo layout: mapper, encoders, model card)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last checkpoint of the trained run."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Also upload it to this hub repo id."),
) -> None:
    """Write the trained mapper as a portable pipeline folder (v2a generate --mapper OUT_DIR uses it)."""
    from lab.commands import export_command

    r = runner()
    try:
        export_command(r, out_dir, checkpoint=checkpoint, push_to_hub=push_to_hub)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        fail(e)


@app.command("app")
def web_app(
    mapper: Optional[str] = typer.Option(None, "--mapper", "-m", help="Pipeline folder or hub id (default: the "
                                         "trained run)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(7860, "--port", help="Port."),
    examples: Optional[Path] = typer.Option(None, "--examples", help="Folder of example videos (default: the "
                                            "configured videos folder, when it exists)."),
) -> None:
    """A web page (Gradio): upload a video or pick an example, set prompt/steps/seed, get the new soundtrack."""
    from lab.commands import app_command

    r = runner()
    try:
        app_command(r, mapper=mapper, configured=STATE.configured, host=host, port=port, examples=examples)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        fail(e)


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


from lab.cli_experiments import register  # noqa: E402  (v2a experiments, ablations, evaluate)

register(app, STATE)

if __name__ == "__main__":
    app()
