"""The model manager and the pipeline's per-frame model: warm-up and validation, atomic swaps, engines closed only
after their last user, and one bad frame that does not end the run. Real models on real photos and video."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest

from edgevision.engines import EngineLoadError
from edgevision.frames import Frame, FrameSource, SourceOptions, open_source
from edgevision.manager import ModelManager, ModelNotReadyError, ModelValidationError, ServedModel
from edgevision.models import ModelRepository
from edgevision.pipeline import BaseConsumer, Pipeline, PipelineOptions


@pytest.fixture()
def manager(media) -> ModelManager:
    """A manager that warms models up on the bundled squirrel photo."""
    manager = ModelManager(sample_image=media.path("squirrel_cls.jpg"))
    yield manager
    manager.close()


def load(folder) -> Any:
    """A model version folder, validated."""
    return ModelRepository.load_folder(folder)


def test_activate_warms_up_and_serves_the_new_version(manager, model_version, media) -> None:
    first = manager.activate(load(model_version("1")))
    second = manager.build(load(model_version("2", "v2-")))
    assert manager.current is first  # built and warmed up, not in service yet
    manager.swap(second)
    assert manager.current is second and first.closed and not second.closed
    with manager.acquire() as served:
        result = served.run(media.image("squirrel_cls.jpg")).to_dict()
    assert result["model"] == "efficientnet-lite0:2"
    assert result["predictions"][0]["label"].startswith("v2-")


def test_replaced_engine_closes_only_after_its_last_user(manager, model_version, media) -> None:
    manager.activate(load(model_version("1")))
    held = manager.acquire()
    manager.activate(load(model_version("2", "v2-")))
    assert not held.closed, "an engine in use was closed"
    assert held.run(media.image("dog.jpg")).model == "efficientnet-lite0:1"
    held.release()
    assert held.closed
    with pytest.raises(RuntimeError, match="released more often"):
        held.release()


@pytest.mark.parametrize(
    ("breakage", "error", "message"),
    [
        ("labels", ModelValidationError, "999 labels"),
        ("model_file", EngineLoadError, "cannot (load|read the inputs)"),
    ],
)
def test_a_model_that_fails_its_warm_up_is_not_served(manager, model_version, breakage, error, message) -> None:
    good = manager.activate(load(model_version("1")))
    folder = model_version("2")
    if breakage == "labels":
        labels = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()[:999]
        (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    else:  # a truncated ONNX file whose manifest hash matches: loads no further than ONNX Runtime
        data = (folder / "model.onnx").read_bytes()[:4096]
        (folder / "model.onnx").write_bytes(data)
        manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        manifest["sha256"] = __import__("hashlib").sha256(data).hexdigest()
        (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(error, match=message):
        manager.activate(load(folder))
    assert manager.current is good and not good.closed


def test_no_model_means_not_ready(media) -> None:
    manager = ModelManager(sample_image=media.path("dog.jpg"))
    assert not manager.ready
    with pytest.raises(ModelNotReadyError):
        manager.acquire()


class Recorder(BaseConsumer):
    """Records the model of each result, in order."""

    name = "recorder"

    def __init__(self) -> None:
        self.models: list[str] = []
        self.indexes: list[int] = []

    def handle(self, frame: Frame, result: Any) -> None:
        self.models.append(result.model)
        self.indexes.append(frame.index)


def test_swaps_during_a_run_lose_no_frame_and_never_mix_models(manager, model_version, make_video) -> None:
    """Every frame of a file is inferred once, by the model that pre-processed it; the run survives swaps."""
    manager.activate(load(model_version("1")))
    versions = [load(model_version(str(v), f"v{v}-")) for v in (2, 3)]
    frames = [np.full((240, 320, 3), (i * 7) % 256, np.uint8) for i in range(90)]
    recorder = Recorder()
    pipeline = Pipeline(
        open_source(str(make_video(frames)), SourceOptions(loop=False)),
        manager,
        [recorder],
        PipelineOptions(queue_size=4, consumer_queue_size=128),  # the recorder's queue holds every result
    )
    pipeline.start()
    for version in versions:
        while pipeline.stats.results < 15 * int(version.manifest.version) and not pipeline.wait(0.01):
            pass
        manager.activate(version)
    assert pipeline.wait(120)
    pipeline.close()
    assert pipeline.error is None and pipeline.stats.errors == 0
    assert recorder.indexes == list(range(90))
    order = [m for i, m in enumerate(recorder.models) if i == 0 or recorder.models[i - 1] != m]
    assert order == ["efficientnet-lite0:1", "efficientnet-lite0:2", "efficientnet-lite0:3"]


class FramesThenEnd(FrameSource):
    """A file-like source of given frames (one of them may be unusable), then the end."""

    live = False

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__("frames")
        self._frames = frames
        self._index = 0

    def open(self) -> None:
        self._index = 0

    def read(self) -> Frame:
        from edgevision.frames import EndOfStreamError  # pylint: disable=import-outside-toplevel

        if self._index >= len(self._frames):
            raise EndOfStreamError("end")
        frame = Frame(self._frames[self._index], self._index, time.monotonic(), "frames")
        self._index += 1
        return frame

    def close(self) -> None:
        return None

    @property
    def stats(self) -> dict[str, Any]:
        return {"frames_read": self._index}


@pytest.mark.parametrize("every_frame", [True, False])
def test_a_one_pixel_frame_is_one_error_not_the_end(manager, model_version, every_frame) -> None:
    manager.activate(load(model_version("1")))
    frames = [np.full((120, 160, 3), 90, np.uint8)] * 3 + [np.zeros((1, 1, 3), np.uint8)]
    frames += [np.full((120, 160, 3), 90, np.uint8)] * 3
    recorder = Recorder()
    source = FramesThenEnd(frames)
    pipeline = Pipeline(source, manager, [recorder], PipelineOptions(every_frame=every_frame))
    if not every_frame:  # newest-frame mode: slow the source so each frame is taken
        original = source.read

        def paced() -> Frame:
            time.sleep(0.15)
            return original()

        source.read = paced  # type: ignore[method-assign]
    pipeline.run()
    assert pipeline.error is None
    assert pipeline.stats.errors == 1
    assert 3 not in recorder.indexes and recorder.indexes[-1] == 6


def test_the_error_budget_still_ends_a_run_of_bad_frames(manager, model_version) -> None:
    manager.activate(load(model_version("1")))
    pipeline = Pipeline(
        FramesThenEnd([np.zeros((1, 1, 3), np.uint8)] * 10), manager, [], PipelineOptions(max_consecutive_errors=5)
    )
    with pytest.raises(Exception, match="at least 2x2"):
        pipeline.run()
    assert pipeline.stats.errors == 5


def test_pipeline_with_a_task_keeps_its_engine_open(model_version, make_video) -> None:
    """Bench code and tests hand the pipeline a task; its owner closes the engine, not the pipeline."""
    from edgevision.vision import build_task  # pylint: disable=import-outside-toplevel

    task = build_task(load(model_version("1")))
    video = make_video([np.full((120, 160, 3), 60, np.uint8)] * 4)
    Pipeline(open_source(str(video), SourceOptions(loop=False)), task, []).run()
    Pipeline(open_source(str(video), SourceOptions(loop=False)), task, []).run()  # the engine still works
    task.engine.close()


def test_concurrent_users_share_one_onnx_session(manager, model_version, media) -> None:
    served: ServedModel = manager.activate(load(model_version("1")))
    image = media.image("dog.jpg")
    expected = served.run(image).to_dict()["predictions"]
    results: list[Any] = []

    def worker() -> None:
        for _ in range(3):
            with manager.acquire() as model:
                results.append(model.run(image).to_dict()["predictions"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 12 and all(r == expected for r in results)
    assert served.users == 0


class Overlaps:
    """Counts how many calls run at once in a real ONNX Runtime engine."""

    def __init__(self, engine: Any, concurrent: bool) -> None:
        self.engine = engine
        self.concurrent_infer = concurrent
        self.name = engine.name
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The engine's inference, counting overlapping calls."""
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.01)
            return self.engine.infer(inputs)
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        """Close the engine."""
        self.engine.close()


@pytest.mark.parametrize("concurrent", [False, True])
def test_engines_that_cannot_run_concurrently_are_serialised(model_version, media, concurrent) -> None:
    """TensorRT engines say concurrent_infer False (contexts and buffers are per caller): the served model then
    lets one call in at a time. Shown with a real ONNX Runtime engine that declares either."""
    from edgevision.vision import build_task  # pylint: disable=import-outside-toplevel

    task = build_task(load(model_version("1")))
    probe = Overlaps(task.engine, concurrent)
    task.engine = probe  # type: ignore[assignment]
    served = ServedModel(task)
    image = media.image("dog.jpg")
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(3):
            served.run(image)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if concurrent:
        assert probe.most > 1
    else:
        assert probe.most == 1
    served.retire()


def test_concurrent_threads_go_to_onnx_runtime_engines_only(media, models_dir) -> None:
    """Two inferences at once get `concurrent_threads` each on ONNX Runtime (concurrent calls); LiteRT, which
    takes one call at a time, keeps `threads`. Real engines on the bundled models."""
    manager = ModelManager(threads=2, concurrent_threads=1, sample_image=media.path("squirrel_cls.jpg"))
    repository = ModelRepository(models_dir)
    try:
        onnx = manager.build(repository.load("efficientnet-lite0"))
        assert onnx.task.engine.name == "onnxruntime" and onnx.task.engine.config.intra_op_threads == 1
        onnx.retire()
        tflite = manager.build(repository.load("nanodet-m-416-tflite"))
        assert tflite.task.engine.name == "tflite" and tflite.task.engine.config.intra_op_threads == 2
        tflite.retire()
        assert ModelManager(threads=2).threads_for(repository.load("efficientnet-lite0")) == 2
    finally:
        manager.close()
