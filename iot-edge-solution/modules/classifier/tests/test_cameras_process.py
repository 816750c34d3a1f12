"""The classifier process with CAMERAS: several cameras on one engine; one that ends and one that never opens
leave the others running; the console and /metrics say which camera is down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
from solution_testkit import free_port

MODULE = Path(__file__).resolve().parents[1] / "main.py"
SOLUTION = Path(__file__).resolve().parents[3]
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")


def short_clip(path: Path, count: int = 6) -> Path:
    """The first frames of the bundled demo video."""
    capture = cv2.VideoCapture(str(SOLUTION / "media" / "demo.mp4"))
    frames = [capture.read()[1] for _ in range(count)]
    capture.release()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def module_env(cameras: str, port: int, store: Path) -> dict[str, str]:
    """A clean environment: the cameras, real-time files that stop at their end, the scoring API on `port`, a line
    per frame, a model store of the test's own."""
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    env.update(
        PYTHONUNBUFFERED="1",
        CAMERAS=cameras,
        MAX_BATCH="4",
        LOOP_VIDEO="False",
        VIDEO_REALTIME="True",
        SCORING_HOST="127.0.0.1",
        SCORING_PORT=str(port),
        INTRA_OP_THREADS="1",
        LOG_EVERY_FRAME="True",
        MODEL_STORE=str(store),
    )
    return env


def test_cameras_run_on_one_engine_and_a_lost_camera_stops_no_other(tmp_path: Path) -> None:
    port = free_port()
    cameras = ";".join(
        [
            f"lobby={SOLUTION / 'media' / 'demo.mp4'}",
            f"door={short_clip(tmp_path / 'door.avi')}",
            f"yard={tmp_path / 'missing.mp4'}",
            f"street={SOLUTION / 'media' / 'vtest.avi'}",
        ]
    )
    with subprocess.Popen(
        [sys.executable, str(MODULE)],
        env=module_env(cameras, port, tmp_path / "model-store"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            metrics = ""
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                        metrics = response.read().decode()
                except OSError:
                    metrics = ""
                if 'camera_up{camera="door",state="ended"}' in metrics:
                    break
                time.sleep(0.3)
            assert 'camera_up{camera="yard",state="down"} 0.0' in metrics
            assert 'camera_up{camera="door",state="ended"} 0.0' in metrics
            assert 'camera_up{camera="lobby",state="up"} 1.0' in metrics
            assert 'camera_up{camera="street",state="up"} 1.0' in metrics
            time.sleep(2)  # the others run on
            process.terminate()  # street (795 frames at 10 fps) would run on for over a minute
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert re.search(r"camera yard down: video file not found: .*missing\.mp4", err)
    assert "camera door ended" in err
    lines = out.splitlines()
    door = [line for line in lines if line.startswith("door frame")]
    assert len(door) == 6 and all("classification:" in line for line in door)
    lobby = [line for line in lines if line.startswith("lobby frame")]
    street = [line for line in lines if line.startswith("street frame")]
    # the others ran on after the door's end (its last line comes before theirs)
    last_door = lines.index(door[-1])
    assert any(lines.index(line) > last_door for line in lobby) and any(
        lines.index(line) > last_door for line in street
    )
    status = next(line for line in lines if line.startswith("cameras: "))
    assert "door ended" in status and "yard down (video file not found" in status
