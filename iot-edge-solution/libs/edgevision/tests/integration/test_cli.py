"""The `edgevision` command: infer prints one JSON object per image; bench prints one JSON object."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevision.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """Run the CLI in-process: exit status, stdout parsed as JSON lines, stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return status, lines, captured.err


def test_infer_prints_one_object_per_image(capsys, media) -> None:
    images = [str(media.path("chelsea.png")), str(media.path("coffee.png"))]
    status, lines, _ = run_cli(capsys, "infer", "--model", "efficientnet-lite0", *images)
    assert status == 0
    assert [line["image"] for line in lines] == images
    for line in lines:
        assert set(line) == {"image", "model", "task", "predictions", "inference_ms"}
        assert line["task"] == "classification" and line["inference_ms"] > 0
        assert all(set(p) == {"label", "confidence"} for p in line["predictions"])
    assert lines[1]["predictions"][0]["label"] == "espresso"


def test_infer_detection_has_boxes(capsys, media) -> None:
    status, lines, _ = run_cli(capsys, "infer", "--model", "nanodet-m-416", str(media.path("dog.jpg")))
    assert status == 0
    boxes = [p["box"] for p in lines[0]["predictions"]]
    assert boxes and all(len(box) == 4 for box in boxes)


def test_infer_reports_bad_images_and_keeps_going(capsys, tmp_path: Path, media) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    paths = [str(not_an_image), str(tmp_path / "missing.png"), str(media.path("coffee.png"))]
    status, lines, _ = run_cli(capsys, "infer", "--model", "efficientnet-lite0", *paths)
    assert status == 1
    assert "not a decodable image" in lines[0]["error"]
    assert "missing.png" in lines[1]["error"]
    assert lines[2]["predictions"][0]["label"] == "espresso"


def test_unknown_model_is_a_clear_error(capsys) -> None:
    status, lines, err = run_cli(capsys, "infer", "--model", "resnet-9000", "x.png")
    assert status == 2 and not lines
    assert "no model named 'resnet-9000'" in err and "efficientnet-lite0" in err


def test_bench_pipeline_prints_ratios(capsys, make_video) -> None:
    frames = [np.full((240, 320, 3), i * 10, np.uint8) for i in range(10)]
    video = make_video(frames)
    status, lines, _ = run_cli(capsys, "bench", "pipeline", "--model", "efficientnet-lite0", "--video",
                               str(video), "--frames", "20", "--threads", "1")
    assert status == 0 and len(lines) == 1
    figures = lines[0]
    for key in ("pipeline_fps", "inference_only_fps", "ratio", "sequential_fps", "stage_mean_ms"):
        assert key in figures
    assert figures["pipeline_fps"] > 0 and figures["inference_only_fps"] > 0
    # The ratio is taken from the unrounded rates, so it matches the printed rates to within their rounding.
    assert figures["ratio"] == pytest.approx(figures["pipeline_fps"] / figures["inference_only_fps"], abs=2e-3)
    assert figures["stage_mean_ms"]["inference"] > 0 and figures["threads"] == 1


def test_bench_refuses_zero_frames(capsys, make_video) -> None:
    video = make_video([np.zeros((64, 64, 3), np.uint8)] * 2)
    status, _, err = run_cli(capsys, "bench", "pipeline", "--model", "efficientnet-lite0", "--video",
                             str(video), "--frames", "0")
    assert status == 2 and "--frames must be > 0" in err


def test_console_script_is_installed(media) -> None:
    script = shutil.which("edgevision", path=str(Path(sys.executable).parent))
    assert script, "the edgevision console script is not installed in this environment"
    command = [script, "infer", "--model", "efficientnet-lite0", str(media.path("coffee.png"))]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["predictions"][0]["label"] == "espresso"
