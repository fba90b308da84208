"""``v2a app``: a Gradio page around ``MFMMapperPipeline`` (MMAudio's demo, for this model).

Upload a video or pick an example, set the prompt, steps, seed (and, under "More", the negative prompt, guidance
and whole-video mode); the page returns the video with its new soundtrack, the wav and the spectrogram. Everything
runs locally: the server binds 127.0.0.1 unless told otherwise, analytics are off, nothing is fetched.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

from infer.generate import write_clip  # noqa: E402
from infer.pipeline import MFMMapperPipeline  # noqa: E402

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}


def example_videos(folder: Path | None, n: int = 4) -> list[str]:
    """Up to ``n`` videos of ``folder`` (sorted by name), for the page's examples; none when it does not exist."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in VIDEO_EXTS][:n]


def generate_one(pipe: MFMMapperPipeline, video: str | None, prompt: str, negative_prompt: str, steps: float,
                 guidance: float, seed: float, whole: bool, out_root: Path) -> tuple[str | None, str, str]:
    """One request: -> (the muxed video or None, the wav, the spectrogram PNG), in a fresh folder of ``out_root``."""
    import gradio as gr

    from pipeline.media import MediaError

    if not video:
        raise gr.Error("Upload a video (or pick an example) first.")
    out = Path(tempfile.mkdtemp(prefix="request-", dir=out_root))
    try:
        res = pipe(video, prompt=prompt.strip() or None, negative_prompt=negative_prompt, steps=int(steps),
                   guidance=float(guidance), seed=int(seed), whole=bool(whole))
    except (MediaError, ValueError, RuntimeError) as e:
        raise gr.Error(f"Cannot generate for this file: {e}") from e
    clip = res.clips[0]
    rec = write_clip(out, clip.id, res.audios[0], video=video, ground_truth=clip.ground_truth, prompt=clip.prompt,
                     info={"seed": clip.seed, "windows": len(clip.starts)})
    log.info("app: %s -> %s", video, out)
    muxed = str(out / rec["video"]) if "video" in rec else None
    return muxed, str(out / rec["wav"]), str(out / rec["png"])


def build_app(pipe: MFMMapperPipeline, examples: list[str] | None = None, out_root: Path | None = None):
    """The ``gradio.Blocks`` page; ``launch()`` it (``v2a app`` binds 127.0.0.1:7860)."""
    import gradio as gr

    d = pipe.settings
    what = ("CLIP features, a V2A-Mapper, AudioLDM" if pipe.generator == "audioldm" else
            "CAVP + TimeChat features, a GPT-2 mapper, AudioLDM-2")
    out_root = Path(out_root or tempfile.mkdtemp(prefix="mfm-app-"))
    out_root.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="MFM-Mapper: sound for silent videos", analytics_enabled=False) as demo:
        gr.Markdown(f"# MFM-Mapper\nSound for a video: {what}. Without *whole video*, the first "
                    f"{d.audio_seconds:g} s.")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="in-video")
                prompt = gr.Textbox(label="Prompt (e.g. the class)", placeholder="dog barking", elem_id="prompt")
                with gr.Row():
                    steps = gr.Slider(1, 200, value=d.steps, step=1, label="Steps", elem_id="steps")
                    seed = gr.Number(value=d.seed, precision=0, label="Seed", elem_id="seed")
                with gr.Accordion("More", open=False):
                    negative = gr.Textbox(value=d.negative_prompt, label="Negative prompt")
                    guidance = gr.Slider(0.0, 10.0, value=d.guidance, step=0.1, label="Guidance")
                    whole = gr.Checkbox(value=False, label="Whole video (overlapping 10 s windows, crossfaded)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                out_video = gr.Video(label="Video with its new soundtrack", elem_id="out-video", interactive=False)
                out_audio = gr.Audio(label="Sound (16 kHz wav)", type="filepath", elem_id="out-audio",
                                     interactive=False)
                out_spec = gr.Image(label="Spectrogram (generated over the video's own sound)", type="filepath",
                                    elem_id="out-spec", interactive=False)
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[video], label="Examples")
        button.click(lambda *a: generate_one(pipe, *a, out_root=out_root),
                     inputs=[video, prompt, negative, steps, guidance, seed, whole],
                     outputs=[out_video, out_audio, out_spec])
    return demo
