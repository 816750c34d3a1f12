"""The live preview in a real headless Chromium: the classifier runs NanoDet on a video made from the bundled dog
photo, and the page on PREVIEW_PORT shows a moving, annotated stream (two screenshots differ, neither is blank).

Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`) and selenium
(requirements-dev.txt). Without them the test skips locally and fails in CI (CI=true)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
CLASSIFIER = SOLUTION / "modules" / "classifier" / "main.py"
KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1000,800",
)


def require_part(available: bool, reason: str) -> None:
    """Skip locally when a real part is missing, fail in CI."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required part missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_paths() -> tuple[str | None, str | None]:
    """The Chromium binary and its chromedriver on PATH (None when missing)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium through Selenium and the system's chromedriver."""
    try:
        from selenium import webdriver  # pylint: disable=import-outside-toplevel
        from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
    except ImportError:
        webdriver = None
    chromium, driver = chromium_paths()
    require_part(webdriver is not None, "selenium is not installed (make setup installs requirements-dev.txt)")
    require_part(
        chromium is not None and driver is not None, "Chromium is missing: apt-get install -y chromium chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    instance = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    instance.set_page_load_timeout(30)
    yield instance
    instance.quit()


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The classifier on a panning video of the dog photo, its preview on a free port; yields the port."""
    folder = tmp_path_factory.mktemp("preview")
    dog = cv2.imread(str(SOLUTION / "media" / "dog.jpg"))
    assert dog is not None
    height, width = dog.shape[:2]
    video = folder / "dog-pan.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for step in range(30):
        shift = np.float32([[1, 0, 4 * step - 60], [0, 1, 0]])
        writer.write(cv2.warpAffine(dog, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    env.update(
        PYTHONUNBUFFERED="1",
        CAMERA_PATH=str(video),
        MODEL_NAME="nanodet-m-416",
        LOOP_VIDEO="True",
        VIDEO_REALTIME="True",
        INTRA_OP_THREADS="1",
        PREVIEW_PORT=str(port),
        PREVIEW_HOST="127.0.0.1",
        PREVIEW_MAX_FPS="10",
    )
    log = (folder / "classifier.log").open("wb")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(CLASSIFIER)],
        env=env,
        stdout=log,  # pylint: disable=consider-using-with
        stderr=subprocess.STDOUT,
        cwd=CLASSIFIER.parent,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (folder / "classifier.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the preview never served a snapshot"
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def screenshot(element: object) -> np.ndarray:
    """A screenshot of one page element as a BGR image."""
    png = element.screenshot_as_png  # type: ignore[attr-defined]
    image = cv2.imdecode(np.frombuffer(io.BytesIO(png).getvalue(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_preview_page_shows_a_moving_annotated_stream(browser: object, classifier: int) -> None:
    driver = browser
    driver.get(f"http://127.0.0.1:{classifier}/")  # type: ignore[attr-defined]
    assert "nanodet-m-416" in driver.title  # type: ignore[attr-defined]
    image = driver.find_element("id", "stream")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not driver.execute_script("return arguments[0].naturalWidth", image):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the stream never showed a frame"
        time.sleep(0.2)
    assert driver.execute_script("return arguments[0].naturalWidth", image) == 768  # type: ignore[attr-defined]
    first = screenshot(image)
    time.sleep(1.5)
    second = screenshot(image)
    for shot in (first, second):
        assert shot.std() > 20, "the stream image is blank"
    difference = np.abs(first.astype(int) - second.astype(int)).mean()
    assert difference > 2, f"the stream did not move (mean difference {difference:.2f})"
    # the annotation is in the stream: the green of a detection box or label is somewhere in the frame
    # (edgevision.annotate's green, BGR 60, 200, 60; the photo itself has almost none of it)
    green = np.abs(second.astype(int) - np.array([60, 200, 60])).max(axis=2) < 30
    assert green.sum() > 500, "no detection drawn on the stream"
