"""The classifier module as a process: per-frame output, clean stop on SIGTERM, clear start-up errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

MODULE = Path(__file__).resolve().parents[1] / "main.py"
SOLUTION = Path(__file__).resolve().parents[3]
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")


def module_env(**overrides: str) -> dict[str, str]:
    """A clean environment: no settings leak in from the test runner."""
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    env.update(overrides)
    return env


def run_module(timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run the module to its end."""
    return subprocess.run(
        [sys.executable, str(MODULE)],
        env=module_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    """Eight frames of the real coffee photo."""
    coffee = cv2.imread(str(SOLUTION / "media" / "coffee.png"))
    assert coffee is not None, "media/coffee.png is missing"
    path = tmp_path_factory.mktemp("video") / "coffee.avi"
    height, width = coffee.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for _ in range(8):
        writer.write(coffee)
    writer.release()
    return path


def test_prints_top_result_and_fps_per_frame_then_a_summary(short_video: Path) -> None:
    completed = run_module(CAMERA_PATH=str(short_video), LOOP_VIDEO="False")
    assert completed.returncode == 0, completed.stderr
    frame_lines = [line for line in completed.stdout.splitlines() if line.startswith("frame ")]
    assert len(frame_lines) == 8
    assert all("classification: espresso" in line and "fps" in line for line in frame_lines)
    assert "processed 8 frames" in completed.stdout
    assert "mean latency per stage" in completed.stdout


def test_sigterm_stops_cleanly_with_a_summary(short_video: Path) -> None:
    env = module_env(CAMERA_PATH=str(short_video), LOOP_VIDEO="True")
    with subprocess.Popen(
        [sys.executable, str(MODULE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            deadline = time.monotonic() + 120
            assert process.stdout is not None
            seen = 0
            while seen < 3 and time.monotonic() < deadline:
                if process.stdout.readline().startswith("frame "):
                    seen += 1
            assert seen == 3, "no frames printed"
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert "processed" in out and "received SIGTERM" in err


@pytest.mark.parametrize(
    "env, fragments",
    [
        ({}, ["CAMERA_PATH is required"]),
        ({"CAMERA_PATH": "/no/such/video.mp4"}, ["/no/such/video.mp4"]),
        ({"CAMERA_PATH": "ftp://camera/stream"}, ["ftp://"]),
        ({"CAMERA_PATH": "x.mp4", "USE_TENSOR_RT": "perhaps"}, ["USE_TENSOR_RT", "True or False"]),
        ({"CAMERA_PATH": "x.mp4", "MODEL_NAME": "resnet-9000"}, ["resnet-9000", "efficientnet-lite0"]),
        ({"CAMERA_PATH": "x.mp4", "USE_TENSOR_RT": "True"}, ["TensorRT", "TENSORRT_FALLBACK"]),
    ],
)
def test_bad_configuration_fails_start_up_clearly(env: dict[str, str], fragments: list[str]) -> None:
    completed = run_module(timeout=60, **env)
    assert completed.returncode == 2
    for fragment in fragments:
        assert fragment in completed.stderr
    assert "Traceback" not in completed.stderr


def test_tensorrt_fallback_runs_on_onnxruntime(short_video: Path) -> None:
    completed = run_module(CAMERA_PATH=str(short_video), LOOP_VIDEO="0", USE_TENSOR_RT="true", TENSORRT_FALLBACK="1")
    assert completed.returncode == 0, completed.stderr
    assert "onnxruntime" in completed.stderr
    assert "processed 8 frames" in completed.stdout


def test_model_name_selects_the_tflite_detector(tmp_path: Path) -> None:
    """MODEL_NAME=ssd-mobilenet-v2-coco-tflite: the module runs the TensorFlow Lite SSD on LiteRT and prints the
    dog.jpg detections (the top one is the dog or the bicycle, both ~0.96)."""
    if not os.environ.get("CI"):
        pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    dog = cv2.imread(str(SOLUTION / "media" / "dog.jpg"))
    video = tmp_path / "dog.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (dog.shape[1], dog.shape[0]))
    for _ in range(4):
        writer.write(dog)
    writer.release()
    completed = run_module(CAMERA_PATH=str(video), LOOP_VIDEO="False", MODEL_NAME="ssd-mobilenet-v2-coco-tflite")
    assert completed.returncode == 0, completed.stderr
    frame_lines = [line for line in completed.stdout.splitlines() if line.startswith("frame ")]
    assert len(frame_lines) == 4
    assert all("detection:" in line and ("dog" in line or "bicycle" in line) for line in frame_lines), frame_lines
    assert "'backend': 'tflite'" in completed.stderr or '"backend": "tflite"' in completed.stderr, completed.stderr[
        -2000:
    ]
