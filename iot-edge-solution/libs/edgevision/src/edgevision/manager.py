"""The model manager: owns the engines of the model in service and of the one being prepared.

A new model version is built in its own engine, warmed up on a sample image and checked while the old one keeps
serving; then `swap` makes it current in one step. Users (the pipeline per frame, the scoring API per request)
`acquire` the current model and `release` it when done; a replaced model's engine is closed only when its last
user has let go, so no inference ever runs on a closed engine."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edgevision.config import VisionSettings
from edgevision.engines.selection import ONNXRUNTIME, choose_backend
from edgevision.errors import EdgeVisionError
from edgevision.models import LoadedModel
from edgevision.models.errors import ModelError
from edgevision.tasks import Geometry, Task, TaskResult
from edgevision.vision import backend_for_model, build_task

log = logging.getLogger(__name__)

# The bundled sample photo relative to a module's main.py, in the repository and in the images:
# <solution>/modules/<name>/main.py -> <solution>/media/squirrel_cls.jpg
SAMPLE_IMAGE_FROM_MODULE = Path("..", "..", "media", "squirrel_cls.jpg")


class ModelNotReadyError(EdgeVisionError):
    """No model is in service (none loaded yet, or the manager is closed)."""


class ModelValidationError(ModelError):
    """A model loaded, but its warm-up inference failed or its outputs do not fit its manifest."""


class ServedModel:
    """One loaded model version: its task, a guard that serialises inference where the backend needs it, and a
    count of users. `retire` marks it replaced; its engine closes when the last user releases it."""

    def __init__(self, task: Task, *, owned: bool = True) -> None:
        self.task = task
        self.model: LoadedModel = task.model
        self.activated_at: float | None = None
        self._owned = owned
        concurrent = bool(getattr(task.engine, "concurrent_infer", False))
        self._guard: Any = contextlib.nullcontext() if concurrent else threading.Lock()
        self._mutex = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False

    # -- identity --------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The manifest's model name."""
        return self.model.manifest.name

    @property
    def version(self) -> str:
        """The manifest's model version."""
        return self.model.manifest.version

    @property
    def ref(self) -> str:
        """`name:version`."""
        return self.model.ref

    @property
    def sha256(self) -> str:
        """The model file's SHA-256 from the manifest (checked when the model was loaded)."""
        return self.model.manifest.sha256

    @property
    def closed(self) -> bool:
        """True once the engine has been closed."""
        return self._closed

    @property
    def users(self) -> int:
        """How many users hold this model now."""
        with self._mutex:
            return self._users

    # -- inference (thread-safe) -----------------------------------------------------------------------------
    def pre_process(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Geometry]:
        """The task's pre-processing (pure array work; any number of threads at once)."""
        return self.task.pre_process(image)

    def infer(self, inputs: dict[str, np.ndarray], geometry: Geometry, preprocess_ms: float = 0.0) -> TaskResult:
        """Engine and post-processing; serialised for backends that cannot run concurrently."""
        with self._guard:
            return self.task.infer(inputs, geometry, preprocess_ms)

    @property
    def batchable(self) -> bool:
        """True when the model's batch axis is open, so frames can share one inference (`infer_batch`)."""
        return self.task.batchable

    def infer_batch(self, items: list[tuple[dict[str, np.ndarray], Geometry, float]]) -> list[TaskResult]:
        """One engine run for several pre-processed frames (see Task.infer_batch); serialised like `infer`."""
        with self._guard:
            return self.task.infer_batch(items)

    def raw_outputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The engine's outputs for pre-processed inputs (for validation)."""
        with self._guard:
            return self.task.engine.infer(inputs)

    def run(self, image: np.ndarray) -> TaskResult:
        """The whole task on one BGR image."""
        started = time.perf_counter()
        inputs, geometry = self.pre_process(image)
        return self.infer(inputs, geometry, (time.perf_counter() - started) * 1000)

    # -- lifetime --------------------------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Count one more user; False when the engine is already closed."""
        with self._mutex:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """One user is done; closes the engine when this was the last user of a retired model."""
        with self._mutex:
            if self._users <= 0:
                raise RuntimeError(f"{self.ref} released more often than acquired")
            self._users -= 1
            close = self._retired and self._users == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self._close_engine()

    def retire(self) -> None:
        """No new users; the engine closes now or when the last current user releases it."""
        with self._mutex:
            self._retired = True
            close = self._users == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self._close_engine()

    def _close_engine(self) -> None:
        if not self._owned:
            return
        try:
            self.task.engine.close()
            log.info("closed the engine of %s", self.ref)
        except Exception:  # pylint: disable=broad-exception-caught
            log.exception("closing the engine of %s failed", self.ref)

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def synthetic_sample(width: int = 640, height: int = 480) -> np.ndarray:
    """A gradient picture, for warm-up when no sample photo is given."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[:, :, 1] = 128
    image[:, :, 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    return image


def validate_outputs(task: Task, outputs: list[np.ndarray]) -> None:
    """Raise ModelValidationError when the engine's outputs do not fit the manifest: count, emptiness, finite
    values, and for classification one score per label."""
    manifest = task.manifest
    if len(outputs) != len(manifest.outputs):
        raise ModelValidationError(
            f"{task.model.ref} returned {len(outputs)} outputs; its manifest names {len(manifest.outputs)}"
        )
    for name, output in zip(manifest.outputs, outputs):
        array = np.asarray(output)
        if array.size == 0:
            raise ModelValidationError(f"{task.model.ref}: output {name!r} is empty")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ModelValidationError(f"{task.model.ref}: output {name!r} holds NaN or infinite values")
    if manifest.task == "classification" and task.labels:
        scores = np.asarray(outputs[0]).size
        if scores != len(task.labels):
            raise ModelValidationError(
                f"{task.model.ref} gives {scores} class scores but its labels file has {len(task.labels)} labels"
            )


ChangeListener = Callable[[ServedModel], None]


class ModelManager:
    """Builds, warms up, validates and swaps models; hands the current one to its users."""

    def __init__(
        self,
        backend: str = "onnxruntime",
        threads: int = 1,
        cache_dir: Path | None = None,
        sample_image: Path | np.ndarray | None = None,
        max_batch: int = 1,
        concurrent_threads: int | None = None,
    ) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.threads = threads
        # intra-op threads of an ONNX Runtime engine when the pipeline runs two inferences at once (see
        # VisionSettings.concurrent_engine_threads); None: `threads` for every engine
        self.concurrent_threads = concurrent_threads
        self.cache_dir = cache_dir
        self._sample_source = sample_image
        self._sample: np.ndarray | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._current: ServedModel | None = None
        self._listeners: list[ChangeListener] = []
        self.swaps = 0

    @classmethod
    def for_task(cls, task: Task, *, owned: bool = False) -> ModelManager:
        """A manager serving one already-built task. `owned` False leaves closing its engine to the caller."""
        manager = cls(backend=task.engine.name)
        manager.swap(ServedModel(task, owned=owned))
        return manager

    @classmethod
    def from_settings(cls, settings: VisionSettings, module_file: str | Path | None = None) -> ModelManager:
        """Backend (USE_TENSOR_RT and fallback), threads and engine cache from a module's settings; the sample
        image is the bundled photo next to the module's models when it exists."""
        sample: Path | None = None
        if module_file is not None:
            candidate = (Path(module_file).resolve().parent / SAMPLE_IMAGE_FROM_MODULE).resolve()
            sample = candidate if candidate.is_file() else None
        backend = choose_backend(settings.use_tensor_rt, settings.tensorrt_fallback)
        # one camera never batches: the TensorRT profile then stays at batch 1 (a smaller, faster plan)
        max_batch = settings.max_batch if len(settings.camera_specs()) > 1 else 1
        return cls(
            backend,
            settings.resolved_threads(),
            settings.engine_cache_dir,
            sample,
            max_batch,
            settings.concurrent_engine_threads(),
        )

    def threads_for(self, model: LoadedModel) -> int:
        """The intra-op threads `model`'s engine gets: `concurrent_threads` where it runs on ONNX Runtime (which
        takes concurrent calls), else `threads`."""
        if self.concurrent_threads and backend_for_model(model, self.backend) == ONNXRUNTIME:
            return self.concurrent_threads
        return self.threads

    # -- building --------------------------------------------------------------------------------------------
    def sample(self) -> np.ndarray:
        """The warm-up image: the sample photo given, else a synthetic picture."""
        if self._sample is None:
            source = self._sample_source
            if isinstance(source, np.ndarray):
                self._sample = source
            elif source is not None:
                image = cv2.imread(str(source), cv2.IMREAD_COLOR)
                if image is None:
                    raise ModelValidationError(f"sample image {source} cannot be read")
                self._sample = image
            else:
                self._sample = synthetic_sample()
        return self._sample

    def build(self, model: LoadedModel) -> ServedModel:
        """A new engine for `model`, warmed up and validated; not in service yet. Raises an EdgeVisionError
        (EngineLoadError, ModelValidationError, ...) and leaves nothing open when the model is unusable."""
        with self._build_lock:  # one model at a time is built (memory); serving goes on meanwhile
            task = build_task(model, self.backend, self.threads_for(model), self.cache_dir, max_batch=self.max_batch)
            served = ServedModel(task)
            try:
                self.warm_up(served)
            except BaseException:
                served.retire()
                raise
            return served

    def warm_up(self, served: ServedModel) -> TaskResult:
        """One inference on the sample image; checks the raw outputs, then the whole task."""
        sample = self.sample()
        try:
            inputs, geometry = served.pre_process(sample)
            validate_outputs(served.task, served.raw_outputs(inputs))
            return served.infer(inputs, geometry)
        except EdgeVisionError:
            raise
        except Exception as e:  # a post-process that breaks on this model's outputs
            raise ModelValidationError(f"warm-up inference of {served.ref} failed: {e!r}") from e

    # -- serving ---------------------------------------------------------------------------------------------
    def activate(self, model: LoadedModel) -> ServedModel:
        """Build `model` and, when it works, put it in service in place of the current one."""
        served = self.build(model)
        self.swap(served)
        return served

    def swap(self, served: ServedModel) -> ServedModel | None:
        """Make `served` current in one step; the previous model is retired (closed after its last user)."""
        with self._lock:
            previous = self._current
            self._current = served
            served.activated_at = time.time()
            self.swaps += 1
        log.info("model in service: %s%s", served.ref, f" (was {previous.ref})" if previous else "")
        for listener in list(self._listeners):
            try:
                listener(served)
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("model change listener failed")
        if previous is not None and previous is not served:
            previous.retire()
        return previous

    def acquire(self) -> ServedModel:
        """The current model, held until `release()` (or use it as a context manager)."""
        with self._lock:
            current = self._current
            if current is None or not current.try_acquire():
                raise ModelNotReadyError("no model is loaded")
            return current

    @property
    def current(self) -> ServedModel | None:
        """The model in service now (not held: use `acquire` to run it)."""
        return self._current

    @property
    def ready(self) -> bool:
        """True when a model is in service."""
        current = self._current
        return current is not None and not current.closed

    def on_change(self, listener: ChangeListener) -> None:
        """Call `listener(served)` after each swap."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Take the current model out of service; its engine closes after its last user."""
        with self._lock:
            previous, self._current = self._current, None
        if previous is not None:
            previous.retire()
