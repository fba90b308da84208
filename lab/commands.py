"""Bodies of the ``v2a generate``, ``v2a export`` and ``v2a app`` commands (``lab/cli.py`` declares their options)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import typer

from v2a.runner import Runner

log = logging.getLogger(__name__)


def generate_command(r: Runner, videos: list[Path], *, out: Path | None, mapper: str | None, configured: bool,
                     prompt: str | None, negative_prompt: str | None, seed: int | None, steps: int | None,
                     guidance: float | None, duration: float | None, whole: bool, batch_size: int, force: bool,
                     progress: bool, overwrite: bool = False) -> None:
    if not videos:
        given = [n for n, v in (("--mapper", mapper), ("--prompt", prompt), ("--negative-prompt", negative_prompt),
                                ("--seed", seed), ("--steps", steps), ("--guidance", guidance),
                                ("--duration", duration), ("--whole", whole or None),
                                ("--overwrite", overwrite or None)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to the videos given on the command line; for the generate "
                             "stage set stages.generate.params (e.g. --set stages.generate.params.steps=50)")
        ran = r.run(["generate"], force=force, progress=progress)
        typer.echo(f"ran: {', '.join(ran) if ran else 'nothing (generate is up to date)'}")
        return
    if steps is not None and steps < 1:
        raise ValueError(f"--steps {steps}: need at least 1 denoising step")
    from infer.labels import format_labels
    from infer.videos import run_videos

    dest = out or r.cfg.videos_dir
    run = run_videos(r.cfg, videos, dest, mapper=mapper, configured=configured, prompt=prompt,
                     negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed, duration=duration,
                     whole=whole, batch_size=batch_size, progress=progress, overwrite=overwrite)
    for rec in run.written:
        video = rec.get("video", "(no video: " + rec.get("video_error", "") + ")")
        labels = rec.get("labels")
        said = f" (auto: {format_labels([(x['label'], x['score']) for x in labels])})" if labels else ""
        typer.echo(f"{rec['id']}: {rec['wav']} {video} {rec['png']} ({rec['seconds']} s), prompt "
                   f"{rec['prompt']!r}{said}")
    for source, reason, detail in run.rejects:
        typer.echo(f"rejected {source}: {reason}{f' ({detail})' if detail else ''}")
    typer.echo(run.summary(dest))


def export_command(r: Runner, out_dir: Path, *, checkpoint: str, push_to_hub: str | None) -> None:
    from infer.export import export_run

    folder = export_run(r.cfg, out_dir, checkpoint)
    typer.echo(f"exported the {checkpoint} mapper to {folder} (v2a generate --mapper {folder} VIDEO...)")
    if push_to_hub:
        from infer.pipeline import push_folder

        info = push_folder(folder, push_to_hub)
        typer.echo(f"uploaded to {push_to_hub}: {getattr(info, 'commit_url', info)}")


def app_command(r: Runner, *, mapper: str | None, configured: bool, host: str, port: int,
                examples: Path | None) -> None:
    if importlib.util.find_spec("gradio") is None:
        raise RuntimeError("v2a app needs gradio: pip install 'mfm-mapper[app]' (or pip install gradio)")
    from infer.app import LAUNCH_OPTIONS, build_app, example_videos
    from infer.videos import load_pipeline
    from v2a.dist import pick_device

    device = pick_device(r.cfg.stage("generate").runtime.get("device", "auto"))
    pipe = load_pipeline(r.cfg, mapper, configured=configured, device=device)
    folder = examples if examples is not None else r.cfg.optional_path("videos")
    demo = build_app(pipe, example_videos(folder), labels=r.cfg.optional_path("labels"))
    typer.echo(f"serving on http://{host}:{port} (Ctrl-C stops)")
    demo.launch(server_name=host, server_port=port, **LAUNCH_OPTIONS)
