"""`v2a app`: the request handler (a user's mistake is one toast and one log line; request folders are bounded),
and the Gradio page in a real headless browser (Debian's chromium + chromedriver, driven by selenium): a mistake
shows a toast and no server traceback; upload a video, press Generate, the result video plays and its file has an
audio stream, the spectrogram is shown whole."""

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
needs_browser = pytest.mark.skipif(not HAVE_BROWSER,
                                   reason="no browser: apt-get install chromium chromium-driver (.ci/run does)")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(steps=2)


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory):
    from pipeline.demo_data import make_demo_clips

    specs = make_demo_clips(tmp_path_factory.mktemp("videos"), n=2, seed=3)
    return next(Path(s.path) for s in specs if s.has_audio)


def test_a_mistake_is_one_toast_and_one_log_line(pipe, tmp_path, caplog):
    from infer.app import RequestFolders, generate_one

    folders = RequestFolders(tmp_path / "app")
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"hello")
    args = ("", "", 2, 3.5, 0, False, folders)
    for video, says in ((None, "Upload a video"), (str(bad), "cannot be used")):
        caplog.clear()
        with pytest.raises(gr.Error) as e:
            generate_one(pipe, video, *args)
        assert says in e.value.message and e.value.print_exception is False  # Gradio prints no traceback
        warned = [r for r in caplog.records if r.name == "infer.app"]
        assert len(warned) == 1 and says in warned[0].getMessage() and warned[0].exc_info is None
    assert list((tmp_path / "app").iterdir()) == []  # a failed request leaves no folder


def test_request_folders_are_bounded(pipe, demo_video, tmp_path):
    from infer.app import RequestFolders, generate_one

    folders = RequestFolders(tmp_path / "app", keep=2)
    with pytest.warns(UserWarning, match="silent"):  # the toast (outside a page: a Python warning)
        got = [generate_one(pipe, str(demo_video), "beep", "", 2, 3.5, s, False, folders) for s in range(3)]
    left = sorted((tmp_path / "app").iterdir())
    assert len(left) == 2 and left == sorted(Path(g[1]).parent for g in got[1:])  # the newest two
    muxed, wav, png, summary = got[-1]
    assert Path(muxed).is_file() and Path(wav).is_file() and Path(png).is_file()
    assert "s** of sound, peak" in summary and "prompt: *beep*" in summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path, pipe):
    from infer.app import LAUNCH_OPTIONS, build_app
    from pipeline.demo_data import make_demo_clips

    specs = make_demo_clips(tmp_path / "videos", n=2, seed=3)
    video = next(Path(s.path) for s in specs if s.path.endswith(".webm") or s.has_audio)
    demo = build_app(pipe, examples=[str(video)], out_root=tmp_path / "app", labels=tmp_path / "videos" / "labels.csv")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, **LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}", video, next(s.label for s in specs if Path(s.path) == video)
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


@needs_browser
def test_upload_generate_and_play_in_a_browser(server, browser, tmp_path, capfd):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, video, label = server
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#in-video input[type=file]")))
    assert f"{label}: {video.stem} (" in browser.find_element(By.TAG_NAME, "body").text  # the example's caption
    capfd.readouterr()
    browser.find_element(By.CSS_SELECTOR, "#generate").click()  # no video yet: a toast, no traceback
    toast = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".toast-body")))
    assert "Upload a video" in toast.text, toast.text
    server_out = capfd.readouterr()
    assert "Traceback" not in server_out.out + server_out.err
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
    spec = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#out-spec img")))
    assert spec.get_attribute("src")
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return arguments[0].complete && "
                                                                "arguments[0].naturalWidth > 0", spec))
    fit = browser.execute_script(
        "const i = arguments[0], r = i.getBoundingClientRect(), s = getComputedStyle(i);"
        "let c = i.parentElement, box = r;"  # the nearest ancestor that clips its content
        "while (c && getComputedStyle(c).overflow === 'visible') c = c.parentElement;"
        "if (c) box = c.getBoundingClientRect();"
        "return [i.naturalWidth, i.naturalHeight, r.width, r.height, s.objectFit, r.top >= box.top - 1, "
        "r.bottom <= box.bottom + 1, r.left >= box.left - 1, r.right <= box.right + 1];", spec)
    nat_w, nat_h, w, h, fit_mode, *inside = fit
    assert all(inside), fit  # nothing of the figure is cut off by its panel
    assert fit_mode in ("contain", "fill", "scale-down", "none") or abs(w / h - nat_w / nat_h) < 0.02, fit
    assert abs(w / h - nat_w / nat_h) < 0.02 or fit_mode in ("contain", "scale-down"), fit  # not stretched
    assert "s** of sound" not in browser.find_element(By.CSS_SELECTOR, "#out-info").text  # rendered markdown
    assert "of sound, peak" in browser.find_element(By.CSS_SELECTOR, "#out-info").text
    assert browser.find_elements(By.CSS_SELECTOR, "#out-audio audio, #out-audio [data-testid]")
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("V2A_SCREENSHOT_DIR"):  # to look at it: V2A_SCREENSHOT_DIR=/tmp/shots pytest tests/test_app.py
        shutil.copy(shot, Path(os.environ["V2A_SCREENSHOT_DIR"]) / "app.png")
    server_out = capfd.readouterr()
    assert "Traceback" not in server_out.out + server_out.err and "share=True" not in server_out.out
