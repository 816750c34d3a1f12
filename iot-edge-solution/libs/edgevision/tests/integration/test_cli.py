"""The `edgevision` command: infer prints one JSON object per image; bench prints one JSON object."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.bench import BenchPlan, bench_pipeline
from edgevision.cli import main
from edgevision.config import available_cpus, resolve_threads
from edgevision.engines import EngineConfig
from edgevision.models import ModelRepository
from edgevision.pipeline import PipelineOptions


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


def test_infer_takes_a_tflite_model(capsys, media) -> None:
    """`edgevision infer` runs the bundled TensorFlow Lite SSD on LiteRT: dog.jpg's dog, bicycle and car."""
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    status, lines, _ = run_cli(
        capsys, "infer", "--model", "ssd-mobilenet-v2-coco-tflite", "--threads", "1", str(media.path("dog.jpg"))
    )
    assert status == 0
    assert {"dog", "bicycle", "car"} <= {p["label"] for p in lines[0]["predictions"]}


def test_tflite_backend_with_an_onnx_model_is_a_clear_error(capsys, media) -> None:
    """--backend tflite on an ONNX model says the file is not a TensorFlow Lite model."""
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    status, _, err = run_cli(
        capsys, "infer", "--model", "nanodet-m-416", "--backend", "tflite", str(media.path("dog.jpg"))
    )
    assert status == 2 and "not a TensorFlow Lite model" in err


def test_bench_takes_a_tflite_model_at_every_thread_count(tmp_path: Path, models_dir: Path) -> None:
    """bench_pipeline on the TFLite SSD: LiteRT at each thread count from 1 to the CPU count."""
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for i in range(10):
        writer.write(np.full((240, 320, 3), i * 10, np.uint8))
    writer.release()
    model = ModelRepository(models_dir).load("ssd-mobilenet-v2-coco-tflite")
    figures = bench_pipeline(model, video, default_threads=1, plan=BenchPlan(frames=8, rounds=2, live_results=4))
    assert figures["backend"] == "tflite"
    assert set(figures["by_threads"]) == {str(t) for t in range(1, available_cpus() + 1)}
    assert all(v["inference_only_fps"] > 0 and v["pipeline_fps"] > 0 for v in figures["by_threads"].values())


@pytest.fixture(scope="module")
def bench_figures(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict:
    """One small benchmark run (2 rounds of 8 frames) on a 30 fps clip, default settings except 1 thread."""
    video = tmp_path_factory.mktemp("bench") / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for i in range(10):
        writer.write(np.full((240, 320, 3), i * 10, np.uint8))
    writer.release()
    model = ModelRepository(models_dir).load("efficientnet-lite0")
    plan = BenchPlan(frames=16, rounds=2, live_results=12, max_callers=2)
    return bench_pipeline(model, video, default_threads=1, plan=plan)


def test_bench_measures_every_thread_count_from_one_to_the_cpu_count(bench_figures: dict) -> None:
    by_threads = bench_figures["by_threads"]
    assert bench_figures["cpu_count"] == available_cpus()
    assert sorted(int(t) for t in by_threads) == list(range(1, available_cpus() + 1))
    assert all(f["inference_only_fps"] > 0 and f["pipeline_fps"] > 0 for f in by_threads.values())
    assert bench_figures["frames"] == 16 and bench_figures["rounds"] == 2


def test_bench_best_figures_are_the_fastest_thread_count(bench_figures: dict) -> None:
    by_threads = bench_figures["by_threads"]
    engine = {int(t): f["inference_only_fps"] for t, f in by_threads.items()}
    pipeline = {int(t): f["pipeline_fps"] for t, f in by_threads.items()}
    assert bench_figures["inference_only_best_fps"] == max(engine.values())
    assert engine[bench_figures["inference_only_best_threads"]] == max(engine.values())
    assert bench_figures["pipeline_best_fps"] == max(pipeline.values())
    assert pipeline[bench_figures["pipeline_best_threads"]] == max(pipeline.values())
    # Measured against the machine's best, the default can only look worse than against its own thread count.
    assert bench_figures["ratio_to_best"] <= bench_figures["ratio"] + 1e-3
    assert bench_figures["default_to_best_pipeline"] <= 1.0


def test_bench_default_figures_are_the_settings_asked_for(bench_figures: dict) -> None:
    """The default pipeline is the sweep's entry at the requested thread count, with the module's options."""
    assert bench_figures["threads"] == 1
    assert bench_figures["pipeline_fps"] == bench_figures["by_threads"]["1"]["pipeline_fps"]
    assert bench_figures["inference_only_fps"] == bench_figures["by_threads"]["1"]["inference_only_fps"]
    defaults = PipelineOptions()
    assert bench_figures["settings"] == {
        "intra_op_spinning": EngineConfig(model_path=Path("m.onnx")).intra_op_spinning,
        "opencv_threads": defaults.opencv_threads,
        "queue_size": defaults.queue_size,
        "capture_nice": defaults.capture_nice,
        "inference_workers": defaults.inference_workers,
        "video_realtime": False,  # a throughput bench reads the file unthrottled
    }
    where = bench_figures["where_time_goes_ms"]
    assert where["capture_thread"]["busy"] == pytest.approx(
        stages_sum(bench_figures, "capture", "preprocess"), abs=2e-3
    )
    assert where["frame_interval"] == pytest.approx(1000 / bench_figures["pipeline_fps"], rel=1e-3)
    stages = bench_figures["stage_mean_ms"]
    assert stages["inference"] > 0 and stages["preprocess"] > 0
    assert stages["end_to_end"] >= stages["inference"]  # a frame's end-to-end time contains its inference


def stages_sum(figures: dict, *stages: str) -> float:
    """The sum of the named stages' mean milliseconds."""
    return sum(figures["stage_mean_ms"][stage] for stage in stages)


def test_bench_machine_best_covers_threads_and_callers(bench_figures: dict) -> None:
    """The machine's best is the fastest engine-alone rate over thread counts and callers, never below the
    one-caller best; the default pipeline's ratio to it is taken against that figure."""
    rates = bench_figures["inference_only_by_threads_and_callers"]
    assert bench_figures["inference_only_machine_best_fps"] == max(rates.values())
    assert bench_figures["inference_only_machine_best_fps"] >= bench_figures["inference_only_best_fps"]
    assert rates[bench_figures["inference_only_machine_best_config"]] == max(rates.values())
    assert bench_figures["ratio_to_machine_best"] == pytest.approx(
        bench_figures["pipeline_fps"] / bench_figures["inference_only_machine_best_fps"], abs=2e-3
    )


def test_bench_live_latency_is_for_a_source_paced_at_its_frame_rate(bench_figures: dict) -> None:
    live = bench_figures["live"]
    assert live["source_fps"] == pytest.approx(30.0) and live["results"] == 12
    # The newest frame is taken when inference is free: results cannot come faster than the source gives frames.
    assert 0 < live["results_fps"] <= live["source_fps"] * 1.2
    assert live["end_to_end_ms"] >= live["inference_ms"] > 0


def test_bench_cli_prints_the_figures_as_one_json_object(capsys, make_video) -> None:
    video = make_video([np.full((120, 160, 3), i * 20, np.uint8) for i in range(6)], fps=30.0)
    status, lines, _ = run_cli(
        capsys,
        "bench",
        "pipeline",
        "--model",
        "efficientnet-lite0",
        "--video",
        str(video),
        "--frames",
        "6",
        "--rounds",
        "1",
    )
    assert status == 0 and len(lines) == 1
    figures = lines[0]
    assert figures["threads"] == resolve_threads(0) == available_cpus()  # --threads 0: every available CPU
    for key in (
        "pipeline_fps",
        "inference_only_fps",
        "ratio",
        "sequential_fps",
        "sequential_ratio",
        "inference_only_best_fps",
        "ratio_to_best",
        "pipeline_best_fps",
        "default_to_best_pipeline",
        "by_threads",
        "stage_mean_ms",
        "live",
    ):
        assert key in figures, key


@pytest.mark.parametrize(
    "args, expected_error",
    [
        (["--video", "/nonexistent/clip.mp4"], "--video: video file not found: /nonexistent/clip.mp4"),
        (["--video", "{tmp}"], "is not a video file"),
        (["--threads", "-3"], "--threads: must be >= 0"),
        (["--threads", "two"], "--threads: expected an integer >= 0"),
        (["--frames", "0"], "--frames must be > 0"),
        (["--rounds", "0"], "--rounds must be > 0"),
    ],
)
def test_bench_refuses_bad_arguments(capsys, make_video, tmp_path: Path, args: list[str], expected_error: str) -> None:
    video = make_video([np.zeros((64, 64, 3), np.uint8)] * 2)
    argv = ["bench", "pipeline", "--model", "efficientnet-lite0", "--video", str(video)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        status = main(argv)
    except SystemExit as e:  # argparse refuses the argument itself
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert expected_error in err
    assert "CAMERA_PATH" not in err  # the user named a --video, not a setting


def test_console_script_is_installed(media) -> None:
    script = shutil.which("edgevision", path=str(Path(sys.executable).parent))
    assert script, "the edgevision console script is not installed in this environment"
    command = [script, "infer", "--model", "efficientnet-lite0", str(media.path("coffee.png"))]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["predictions"][0]["label"] == "espresso"
