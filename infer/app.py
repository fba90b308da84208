"""``v2a app``: a Gradio page around ``MFMMapperPipeline`` (MMAudio's demo, for this model).

Upload a video or pick an example, set the prompt, steps, seed (and, under "More settings", the negative prompt,
guidance and whole-video mode); the page returns the video with its new soundtrack, the wav, the spectrogram (on
the absolute dBFS scale of every other figure) and one line saying what was made. Everything runs locally: the
server binds 127.0.0.1 unless told otherwise, analytics are off, nothing is fetched, no share link is offered.

A user's mistake (no video, a file that is not a usable video, a bad setting) is one toast on the page and one log
line on the server, never a traceback. Each request writes into its own folder under the app's folder; only the
last ``KEEP_REQUESTS`` finished ones are kept (Gradio serves copies of the results from its own cache), and the
app's folder is removed when the server process ends.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import av  # noqa: E402

from infer.generate import write_clip  # noqa: E402
from infer.media_out import video_span  # noqa: E402
from infer.pipeline import MFMMapperPipeline  # noqa: E402

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}
VIDEO_H = 280  # px: both videos, so that the results fit beside the settings
KEEP_REQUESTS = 4  # finished request folders kept on disk (the newest); older ones are removed
# "Automatic label": the checkbox passes prompt="auto" (``pipe``: a zero-shot VGGSound label from the frames,
# infer/labels.py; the summary line shows the label used)
AUTO_LABEL = True
# demo.launch(server_name=..., server_port=..., **LAUNCH_OPTIONS): no public link and no hint about one; errors
# that are not a user's mistake (bugs) still reach the page
LAUNCH_OPTIONS = {"share": False, "show_error": True, "quiet": True}


def example_videos(folder: Path | None, n: int = 4) -> list[str]:
    """Up to ``n`` videos of ``folder`` (sorted by name), for the page's examples; none when it does not exist."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in VIDEO_EXTS][:n]


def example_labels(labels: Path | None) -> dict[str, str]:
    """{clip id (file stem): class label} of the project's labels table (VGGSound CSV), for the captions; {} when
    there is none or it cannot be read (the captions then show file names)."""
    from pipeline.inputs import InputError, read_labels

    if labels is None or not Path(labels).is_file():
        return {}
    try:
        return {cid: label for cid, (label, _) in read_labels(Path(labels)).items()}
    except (InputError, OSError) as e:
        log.warning("app: example captions without labels: %s", e)
        return {}


def example_caption(video: str, labels: dict[str, str] | None = None) -> str:
    """``"dog barking: HaPYwAJBFIK_000084 (14.0 s)"``: the clip's label when known, its file name, its length."""
    stem = Path(video).stem
    name = f"{labels[stem]}: {stem}" if labels and stem in labels else stem
    try:
        start, end = video_span(video)
    except (OSError, ValueError, IndexError, av.error.FFmpegError):  # a caption only: the name stands
        return name
    return f"{name} ({end - start:.1f} s)"


class RequestFolders:
    """One fresh folder per request under ``root``; the newest ``keep`` finished ones stay, a failed one goes."""

    def __init__(self, root: Path, keep: int = KEEP_REQUESTS):
        self.root, self.keep = Path(root), keep
        self.root.mkdir(parents=True, exist_ok=True)
        self._done: deque[Path] = deque()
        self._lock = threading.Lock()

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def finished(self, folder: Path) -> None:
        with self._lock:
            self._done.append(folder)
            while len(self._done) > self.keep:
                shutil.rmtree(self._done.popleft(), ignore_errors=True)

    def failed(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


def _refuse(message: str, video: str | None = None):
    """The toast for a user's mistake, and its one log line (no traceback on the server)."""
    import gradio as gr

    log.warning("app: refused%s: %s", f" {Path(video).name}" if video else "", message)
    return gr.Error(message, title="Cannot generate", print_exception=False)


def generate_one(pipe: MFMMapperPipeline, video: str | None, prompt: str, negative_prompt: str, steps: float,
                 guidance: float, seed: float, whole: bool, folders: RequestFolders,
                 auto_label: bool = False) -> tuple[str | None, str, str, str]:
    """One request: -> (the muxed video or None, the wav, the spectrogram PNG, a line saying what was made)."""
    import gradio as gr

    from pipeline.media import MediaError

    if not video:
        raise _refuse("Upload a video (or click an example) first.")
    if steps is None or seed is None or int(steps) < 1:
        raise _refuse("Steps must be at least 1 and the seed a whole number.")
    out = folders.new()
    try:
        res = pipe(video, prompt="auto" if auto_label else (prompt or "").strip() or None,
                   negative_prompt=negative_prompt, steps=int(steps), guidance=float(guidance), seed=int(seed),
                   whole=bool(whole))
        clip = res.clips[0]
        rec = write_clip(out, clip.id, res.audios[0], video=video, ground_truth=clip.ground_truth,
                         prompt=clip.prompt, info={"seed": clip.seed, "windows": len(clip.starts)})
    except MediaError as e:
        folders.failed(out)
        raise _refuse(f"This file cannot be used: {e}", video) from None
    except (ValueError, RuntimeError, OSError) as e:
        folders.failed(out)
        raise _refuse(str(e), video) from None
    folders.finished(out)
    log.info("app: %s -> %s (%s s, peak %s dBFS)", Path(video).name, out, rec["seconds"], rec["peak_dbfs"])
    if rec["silent"]:
        gr.Warning("The new sound is silent (its peak is below -60 dBFS). With the demo's random tiny models "
                   "this is expected; a trained model makes audible sound.", title="Silent result")
    if "video" not in rec:
        gr.Warning(f"The video could not be written with its new sound: {rec.get('video_error')}. The sound "
                   "and the spectrogram are below.", title="No video")
    summary = (f"**{rec['seconds']:g} s** of sound, peak **{'-inf' if rec['peak_dbfs'] is None else rec['peak_dbfs']}"
               f" dBFS**{' (silent)' if rec['silent'] else ''}; prompt: *{clip.prompt or 'none'}*; seed {int(seed)}")
    muxed = str(out / rec["video"]) if "video" in rec else None
    return muxed, str(out / rec["wav"]), str(out / rec["png"]), summary


def _intro(pipe: MFMMapperPipeline) -> str:
    d = pipe.settings
    how = ("CLIP image features, a V2A-Mapper and AudioLDM" if pipe.generator == "audioldm" else
           "CAVP and TimeChat video features, a GPT-2 mapper and AudioLDM-2")
    text = (f"# MFM-Mapper: sound for a silent video\n"
            f"Upload a short video (or click an example), then press **Generate**. The model watches the video and "
            f"makes a soundtrack for it: you get the video with its new sound, the sound alone, and a picture of "
            f"the sound (a spectrogram, above the video's own sound when it has one). Without *Whole video* the "
            f"sound covers the first {d.audio_seconds:g} s. Everything runs on this computer.\n\n"
            f"<small>How: {how}.</small>")
    if pipe.model_params.get("model") in ("tiny", "random-full"):
        text += ("\n\n**Demo models**: these are small random networks, not trained ones: the page works end to "
                 "end, the sound is (nearly) silent.")
    return text


def build_app(pipe: MFMMapperPipeline, examples: list[str] | None = None, out_root: Path | None = None,
              labels: Path | None = None):
    """The ``gradio.Blocks`` page; ``launch()`` it with ``LAUNCH_OPTIONS`` (``v2a app``: 127.0.0.1:7860).
    ``examples``: videos offered on the page, captioned with their label from ``labels`` (a VGGSound CSV)."""
    import gradio as gr

    d = pipe.settings
    captions = example_labels(labels) if examples else {}
    own_root = out_root is None
    folders = RequestFolders(Path(out_root or tempfile.mkdtemp(prefix="mfm-app-")))
    if own_root:
        atexit.register(shutil.rmtree, folders.root, True)
    with gr.Blocks(title="MFM-Mapper: sound for silent videos", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # Gradio's copies of the results: an hour
        gr.Markdown(_intro(pipe))
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Your video", sources=["upload"], elem_id="in-video", height=VIDEO_H)
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[video],
                                label="Examples: click one to load it",
                                example_labels=[example_caption(e, captions) for e in examples])
                prompt = gr.Textbox(label="What should it sound like? (optional)", placeholder="dog barking",
                                    info="A few words, e.g. the kind of sound source; leave empty to let the "
                                         "video alone decide.", elem_id="prompt")
                auto = gr.Checkbox(value=False, label="Automatic label (the model names the sound itself)",
                                   visible=AUTO_LABEL, elem_id="auto-label")
                with gr.Row():
                    steps = gr.Slider(1, 200, value=d.steps, step=1, label="Steps", elem_id="steps",
                                      info=f"How many times the sound is refined from noise: more is slower and "
                                           f"usually cleaner. {d.steps} is this model's setting ({d.scheduler}).")
                    seed = gr.Number(value=d.seed, precision=0, label="Seed", elem_id="seed",
                                     info="Another number gives another take of the same video.")
                with gr.Accordion("More settings", open=False):
                    negative = gr.Textbox(value=d.negative_prompt, label="Avoid (negative prompt)")
                    guidance = gr.Slider(0.0, 10.0, value=d.guidance, step=0.1, label="Guidance",
                                         info="How strongly the sound follows the video and prompt (1 or less: "
                                              "off).")
                    whole = gr.Checkbox(value=False, label=f"Whole video (overlapping {d.audio_seconds:g} s "
                                                           f"pieces, blended)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                out_video = gr.Video(label="Video with its new sound", elem_id="out-video", interactive=False,
                                     height=VIDEO_H)
                out_audio = gr.Audio(label="The new sound (16 kHz wav)", type="filepath", elem_id="out-audio",
                                     interactive=False)
                out_info = gr.Markdown(elem_id="out-info")
                gr.Markdown("<small>**Spectrogram**: the new sound above the video's own sound, on one scale in "
                            "dBFS (the colour bar; black is silence).</small>")
                out_spec = gr.Image(show_label=False, type="filepath", elem_id="out-spec", interactive=False,
                                    buttons=[])  # no icons over the figure's corner (its colour bar)

        def run(v, p, n, st, g, se, wh, au):
            return generate_one(pipe, v, p, n, st, g, se, wh, folders, auto_label=au)

        button.click(run, inputs=[video, prompt, negative, steps, guidance, seed, whole, auto],
                     outputs=[out_video, out_audio, out_spec, out_info])
    demo.request_folders = folders  # for tests and the caller
    return demo
