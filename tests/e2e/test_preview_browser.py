"""The live preview in a real headless Chromium: the classifier runs NanoDet on a video made from the bundled dog
photo, and the page on PREVIEW_PORT shows a moving, annotated stream (two screenshots differ, neither is blank).

Needs Debian's `chromium` (`apt-get install -y chromium`), driven by Playwright (the `browser` fixture of
tests/e2e/conftest.py). Without it the test skips locally and fails in CI (CI=true)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest

from edgehub_emulator.process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
CLASSIFIER = SOLUTION / "modules" / "classifier" / "main.py"
KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
VIEWPORT = {"width": 1000, "height": 800}


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
        MODEL_STORE=str(folder / "model-store"),
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


def screenshot(element: Any) -> np.ndarray:
    """A screenshot of one page element (a Playwright Locator) as a BGR image."""
    image = cv2.imdecode(np.frombuffer(element.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_preview_page_shows_a_moving_annotated_stream(browser: Any, classifier: int) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_navigation_timeout(30_000)
        # the MJPEG stream never ends: wait for the document, then for the image's first frame
        page.goto(f"http://127.0.0.1:{classifier}/", wait_until="domcontentloaded")
        assert "nanodet-m-416" in page.title()
        image = page.locator("#stream")
        deadline = time.monotonic() + 30
        while not image.evaluate("img => img.naturalWidth"):
            assert time.monotonic() < deadline, "the stream never showed a frame"
            time.sleep(0.2)
        assert image.evaluate("img => img.naturalWidth") == 768
        first = screenshot(image)
        time.sleep(1.5)
        second = screenshot(image)
    finally:
        context.close()
    for shot in (first, second):
        assert shot.std() > 20, "the stream image is blank"
    difference = np.abs(first.astype(int) - second.astype(int)).mean()
    assert difference > 2, f"the stream did not move (mean difference {difference:.2f})"
    # the annotation is in the stream: the green of a detection box or label is somewhere in the frame
    # (edgevision.annotate's green, BGR 60, 200, 60; the photo itself has almost none of it)
    green = np.abs(second.astype(int) - np.array([60, 200, 60])).max(axis=2) < 30
    assert green.sum() > 500, "no detection drawn on the stream"
