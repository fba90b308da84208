"""The static gallery: parses, has every clip, every referenced file exists; optionally rendered by chromium."""

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import pipeline.spectrogram as S
from pipeline.spectrogram import write_spectrogram_png
from scoring.gallery import build_gallery
from scoring.run import ClipPair

SR = 16000
CHROMIUM = Path("/usr/bin/chromium")


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.clips, self.srcs, self.tags = [], [], {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "data-clip-id" in a:
            self.clips.append(a["data-clip-id"])
        if "src" in a:
            self.srcs.append((tag, a["src"]))


def _clips(tmp_path):
    t = np.arange(SR) / SR
    gen_wav = tmp_path / "outputs" / "c1.wav"
    gen_wav.parent.mkdir()
    sf.write(gen_wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    frame_files = []
    for i in range(3):
        f = tmp_path / "frames" / f"{i}.jpg"
        f.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 24), (80 * i, 10, 10)).save(f)
        frame_files.append(f)
    video = tmp_path / "videos" / "c1.mp4"
    video.parent.mkdir()
    video.write_bytes(b"\x00")
    frames = np.random.default_rng(0).integers(0, 255, size=(40, 24, 32, 3), dtype=np.uint8)
    return [ClipPair("c0", np.sin(2 * np.pi * 220 * t).astype(np.float32), 0.1 * np.ones(SR, np.float32),
                     frames=frames),
            ClipPair("c1", None, gen_wav, video=video, frames=frame_files),
            ClipPair("c2", gen_wav, gen_wav)]


def test_gallery_is_self_contained_and_parses(tmp_path):
    clips = _clips(tmp_path)
    clips[0].label, clips[0].prompt = "dog barking", "a dog barking"
    page = build_gallery(clips, tmp_path / "gallery", scores={"c0": {"status": "ok", "kl_panns": 1.5}})
    for gone in ("outputs", "frames", "videos"):  # the sources may go: the gallery holds copies
        shutil.rmtree(tmp_path / gone)
    p = _Collect()
    text = page.read_text()
    p.feed(text)
    assert p.clips == ["c0", "c1", "c2"]
    assert p.tags["audio"] == 5 and p.tags["video"] == 1  # c1 has no ground truth
    assert sum(1 for t, _ in p.srcs if t == "img") == 8 + 3 + 3  # frames (8 of 40, 3 files) + 1 figure per clip
    for tag, src in p.srcs:
        assert not src.startswith(("http:", "https:", "/", "..")), src
        assert (page.parent / src).is_file(), (tag, src)
    assert (page.parent / "media" / "c1" / "video.mp4").read_bytes() == b"\x00"
    assert "missing" in text and "1.500" in text
    assert '<b class="label">dog barking</b>' in text and '<b class="prompt">a dog barking</b>' in text


def test_gallery_spectrograms_on_the_absolute_scale_and_silence_marked(tmp_path):
    """Ground truth 40 dB louder than the generated sound: the generated panel is darker, drawn exactly as the
    generate stage's PNG draws it (one absolute dBFS scale everywhere); a sound peaking below -60 dBFS is marked."""
    t = np.arange(SR) / SR
    loud = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    page = build_gallery([ClipPair("c0", loud, loud / 100), ClipPair("c1", loud, loud / 10_000)],
                         tmp_path / "gallery")
    with Image.open(page.parent / "media" / "c0" / "spectrogram.png") as img:
        px = np.asarray(img.convert("L"), dtype=float)
    assert img.size == (800, S.TOP + 2 * S.PANEL_H + S.GAP + S.BOTTOM)
    cols = slice(S.LEFT, 800 - S.RIGHT)  # layout of pipeline.spectrogram (2 panels)
    gen_panel = px[S.TOP: S.TOP + S.PANEL_H, cols]
    gt_panel = px[S.TOP + S.PANEL_H + S.GAP: S.TOP + 2 * S.PANEL_H + S.GAP, cols]
    assert gt_panel.max() > gen_panel.max() + 20
    write_spectrogram_png(tmp_path / "own.png", loud / 100, title="c0")  # the generate stage's figure
    with Image.open(tmp_path / "own.png") as img:
        own = np.asarray(img.convert("L"), dtype=float)
    np.testing.assert_array_equal(own[S.TOP: S.TOP + S.PANEL_H, cols], gen_panel)
    text = page.read_text()
    c0, c1 = text.split('id="clip-c1"')
    assert "generated: peak -46.0 dBFS" in c0 and "SILENT</span>" not in c0.split('id="clip-c0"')[1]
    assert '<span class="silent">generated: peak -86.0 dBFS: SILENT</span>' in c1
    assert "ground truth: peak -6.0 dBFS" in c1


if not CHROMIUM.exists() and os.environ.get("V2A_REQUIRE_BROWSER"):  # CI (.ci/run) installs it: never skip there
    raise RuntimeError(f"V2A_REQUIRE_BROWSER is set but {CHROMIUM} is missing")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed at /usr/bin/chromium")
def test_gallery_renders_in_headless_chromium(tmp_path):
    page = build_gallery(_clips(tmp_path), tmp_path / "gallery")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    p = _Collect()
    p.feed(out.stdout)
    assert p.clips == ["c0", "c1", "c2"]
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
