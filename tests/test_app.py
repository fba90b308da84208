"""`v2a app`: the Gradio page in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
upload a video, press Generate, the result video plays and its file has an audio stream."""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
from pathlib import Path

import av
import pytest

from e2e_project import tiny_pipeline

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'mfm-mapper[test]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
HAVE_BROWSER = CHROMIUM.exists() and DRIVER.exists()
if not HAVE_BROWSER and os.environ.get("V2A_REQUIRE_BROWSER"):  # CI (.ci/run) installs it: never skip there
    raise RuntimeError(f"V2A_REQUIRE_BROWSER is set but {CHROMIUM} or {DRIVER} is missing")
pytestmark = pytest.mark.skipif(not HAVE_BROWSER,
                                reason="no browser: apt-get install chromium chromium-driver (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    from infer.app import build_app
    from pipeline.demo_data import make_demo_clips

    specs = make_demo_clips(tmp_path / "videos", n=2, seed=3)
    video = next(Path(s.path) for s in specs if s.path.endswith(".webm") or s.has_audio)
    demo = build_app(tiny_pipeline(steps=2), examples=[str(video)], out_root=tmp_path / "app")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}", video
    demo.close()


@pytest.fixture()
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1400",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    yield driver
    driver.quit()


def test_upload_generate_and_play_in_a_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, video = server
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#in-video input[type=file]")))
    upload.send_keys(str(video))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#in-video video")))
    browser.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys("red beep")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    player = WebDriverWait(browser, 600).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#out-video video")))
    state = browser.execute_async_script(
        "const v = arguments[0], done = arguments[arguments.length - 1];"
        "v.muted = true; v.play().then(() => setTimeout(() => done([v.currentTime, v.duration, v.readyState]), 1500))"
        ".catch(e => done(String(e)));", player)
    assert isinstance(state, list) and state[0] > 0 and state[1] > 0, state  # it plays
    src = player.get_attribute("src")
    assert src.startswith(url)  # served by the app itself
    got = tmp_path / f"result{video.suffix}"
    got.write_bytes(urllib.request.urlopen(src, timeout=60).read())
    with av.open(str(got)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1  # the new soundtrack
    assert browser.find_element(By.CSS_SELECTOR, "#out-spec img").get_attribute("src")
    assert browser.find_elements(By.CSS_SELECTOR, "#out-audio audio, #out-audio [data-testid]")
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("V2A_SCREENSHOT_DIR"):  # to look at it: V2A_SCREENSHOT_DIR=/tmp/shots pytest tests/test_app.py
        shutil.copy(shot, Path(os.environ["V2A_SCREENSHOT_DIR"]) / "app.png")
