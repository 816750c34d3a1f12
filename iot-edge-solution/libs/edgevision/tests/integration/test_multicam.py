"""Several cameras on one engine: real videos, the real classification model, batched and frame by frame."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.frames import Frame, SourceOptions, open_source
from edgevision.models import ModelRepository
from edgevision.pipeline import (
    AllCamerasDownError,
    BaseConsumer,
    MultiCameraOptions,
    MultiCameraPipeline,
)
from edgevision.tasks import TaskResult
from edgevision.vision import build_task


@pytest.fixture(scope="module")
def task(models_dir):
    """The bundled classifier with its batch axis open up to 4."""
    built = build_task(ModelRepository(models_dir).load("efficientnet-lite0"), threads=2, max_batch=4)
    yield built
    built.engine.close()


class Recorder(BaseConsumer):
    """Records (camera, frame index, result) of every result."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, TaskResult]] = []
        self._lock = threading.Lock()

    def handle(self, frame: Frame, result: TaskResult) -> None:
        with self._lock:
            self.seen.append((frame.camera, frame.index, result))

    def by_camera(self) -> dict[str, list[tuple[int, TaskResult]]]:
        """Results per camera, in arrival order."""
        with self._lock:
            grouped: dict[str, list[tuple[int, TaskResult]]] = {}
            for camera, index, result in self.seen:
                grouped.setdefault(camera, []).append((index, result))
            return grouped


def clip(source: Path, target: Path, count: int, size: tuple[int, int] | None = None) -> Path:
    """The first `count` frames of a real video as an MJPG clip (optionally resized)."""
    capture = cv2.VideoCapture(str(source))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        assert ok, f"{source} has fewer than {count} frames"
        frames.append(cv2.resize(frame, size) if size else frame)
    capture.release()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return target


def test_four_cameras_one_ends_one_never_opens_the_others_run_on(task, media, tmp_path: Path) -> None:
    looping = SourceOptions(loop=True)
    short = clip(media.path("demo.mp4"), tmp_path / "short.avi", 5)
    cameras = [
        ("lobby", open_source(str(media.path("demo.mp4")), looping)),
        ("door", open_source(str(short), SourceOptions(loop=False))),
        ("yard", open_source(str(tmp_path / "missing.mp4"), looping)),
        ("street", open_source(str(media.path("vtest.avi")), looping)),
    ]
    recorder = Recorder()
    # the recorder's queue holds every result (90): the test checks each camera's frames, not the fan-out's
    # dropping for a lagging consumer (test_pipeline.py has that), which a loaded CI machine can set off
    options = MultiCameraOptions(max_batch=4, max_results=90, consumer_queue_size=128)
    pipeline = MultiCameraPipeline(cameras, task, [recorder], options)
    pipeline.run()

    status = pipeline.camera_status()
    assert status["yard"]["state"] == "down" and "missing.mp4" in status["yard"]["reason"]
    assert status["door"]["state"] == "ended"
    assert status["lobby"]["state"] == "up" and status["street"]["state"] == "up"
    grouped = recorder.by_camera()
    assert "yard" not in grouped
    assert [index for index, _ in grouped["door"]] == [0, 1, 2, 3, 4]
    # the two live cameras ran on well past the end of the short one, each frame in order
    for name in ("lobby", "street"):
        indexes = [index for index, _ in grouped[name]]
        assert len(indexes) > 30 and indexes == sorted(indexes)
    # fair: a camera whose frames decode more slowly still gets (nearly) every round
    counts = sorted(len(grouped[name]) for name in ("lobby", "street"))
    assert counts[0] >= 0.8 * counts[1], grouped.keys()
    # every result counted reached the recorder, and each camera's count is what the recorder saw of it
    assert pipeline.consumer_stats["recorder"]["dropped"] == 0
    counted = sum(camera["results"] for camera in status.values())
    assert counted == len(recorder.seen), (counted, len(recorder.seen))
    for name in ("lobby", "door", "street"):
        assert status[name]["results"] == len(grouped[name]), name
    # real content: the demo video shows a cat, vtest.avi people in a street (not a cat)
    assert "cat" in grouped["lobby"][0][1].top.label
    assert pipeline.error is None


def test_batched_results_equal_frame_by_frame_results(task, media, tmp_path: Path) -> None:
    videos = {
        "a": clip(media.path("demo.mp4"), tmp_path / "a.avi", 12),
        "b": clip(media.path("vtest.avi"), tmp_path / "b.avi", 12),
        "c": clip(media.path("vtest.avi"), tmp_path / "c.avi", 12, size=(1280, 720)),
    }

    def run(max_batch: int, workers: int) -> dict[tuple[str, int], TaskResult]:
        recorder = Recorder()
        cameras = [(name, open_source(str(path), SourceOptions(loop=False))) for name, path in videos.items()]
        pipeline = MultiCameraPipeline(
            cameras,
            task,
            [recorder],
            MultiCameraOptions(max_batch=max_batch, inference_workers=workers, consumer_queue_size=64),
        )
        pipeline.run()
        assert pipeline.inference_workers == workers
        # two rounds in inference at once still hand each camera's results over in frame order
        for name, results in recorder.by_camera().items():
            assert [index for index, _ in results] == list(range(12)), name
        return {(camera, index): result for camera, index, result in recorder.seen}

    batched, single = run(4, 2), run(1, 1)
    assert sorted(batched) == sorted(single) == sorted((name, i) for name in videos for i in range(12))
    for key, result in batched.items():
        expected = single[key]
        assert [p.class_id for p in result.predictions] == [p.class_id for p in expected.predictions], key
        assert np.allclose(
            [p.confidence for p in result.predictions], [p.confidence for p in expected.predictions], atol=1e-5
        ), key


def test_file_cameras_are_pre_processed_on_their_capture_threads(models_dir, media, tmp_path: Path) -> None:
    """A file camera's frame is always used, so its capture thread pre-processes it while the engine runs; the
    results are the model's on each frame as one image."""
    task = build_task(ModelRepository(models_dir).load("efficientnet-lite0"), threads=1, max_batch=2)
    threads_seen: list[str] = []
    preprocess = task.preprocessor

    def recording(image: np.ndarray):
        threads_seen.append(threading.current_thread().name)
        return preprocess(image)

    task.preprocessor = recording  # type: ignore[assignment]
    video = clip(media.path("demo.mp4"), tmp_path / "a.avi", 6)
    recorder = Recorder()
    cameras = [(name, open_source(str(video), SourceOptions(loop=False))) for name in ("a", "b")]
    try:
        # a queue that holds every result: the recorder must see all of them, however loaded the machine
        MultiCameraPipeline(cameras, task, [recorder], MultiCameraOptions(max_batch=2, consumer_queue_size=64)).run()
        assert sorted((camera, index) for camera, index, _ in recorder.seen) == [
            (name, i) for name in ("a", "b") for i in range(6)
        ]
        assert len(threads_seen) == 12 and all(name.startswith("capture-") for name in threads_seen), threads_seen
        task.preprocessor = preprocess
        capture = cv2.VideoCapture(str(video))
        expected = [task.run(capture.read()[1]) for _ in range(6)]
        capture.release()
        for _, index, result in recorder.seen:
            assert result.predictions[0].class_id == expected[index].predictions[0].class_id
            assert result.predictions[0].confidence == pytest.approx(
                expected[index].predictions[0].confidence, abs=1e-5
            )
    finally:
        task.engine.close()


def test_every_camera_down_is_an_error_naming_each(task, tmp_path: Path) -> None:
    cameras = [(name, open_source(str(tmp_path / f"{name}.mp4"))) for name in ("x", "y")]
    pipeline = MultiCameraPipeline(cameras, task, [])
    with pytest.raises(AllCamerasDownError, match=r"x: .*x\.mp4.*; y: .*y\.mp4"):
        pipeline.run()


def test_camera_names_must_be_unique(task, media) -> None:
    source = open_source(str(media.path("demo.mp4")))
    with pytest.raises(ValueError, match="unique"):
        MultiCameraPipeline([("a", source), ("a", source)], task)


def test_two_inference_threads_only_for_unpaced_files(task, media) -> None:
    """Rounds overlap only where every frame of every camera is used (files read unpaced): a paced file keeps one
    inference thread, as a live camera does."""
    demo = str(media.path("demo.mp4"))
    for realtime, expected in ((False, 2), (True, 1)):
        cameras = [
            ("a", open_source(demo, SourceOptions(loop=True))),
            ("b", open_source(demo, SourceOptions(loop=True, realtime=realtime))),
        ]
        pipeline = MultiCameraPipeline(cameras, task, [], MultiCameraOptions(max_batch=2, max_results=6))
        pipeline.run()
        assert pipeline.inference_workers == expected and pipeline.error is None
