"""A task is pre_process -> engine -> post_process, returning a typed result."""

from __future__ import annotations

import abc
import time
from typing import Any, Generic, TypeVar

import numpy as np

from edgevision.engines.base import Engine, EngineError
from edgevision.models.repository import LoadedModel
from edgevision.tasks.preprocess import Geometry, Preprocessor
from edgevision.tasks.results import TaskResult

ResultT = TypeVar("ResultT", bound=TaskResult)


class Task(abc.ABC, Generic[ResultT]):
    """Runs one loaded model on images. Not thread-safe: one thread calls `run`/`infer` at a time."""

    task_name: str = "abstract"

    def __init__(self, model: LoadedModel, engine: Engine) -> None:
        self.model = model
        self.engine = engine
        self.manifest = model.manifest
        self.labels = model.labels
        self.preprocessor = Preprocessor(self.manifest.preprocess, self.manifest.input)

    def pre_process(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Geometry]:
        """Image -> named input tensors, and the geometry to map results back to the image."""
        tensor, geometry = self.preprocessor(image)
        return {self.manifest.input.name: tensor}, geometry

    @abc.abstractmethod
    def post_process(self, outputs: list[np.ndarray], geometry: Geometry) -> tuple[Any, ...]:
        """Engine outputs -> predictions."""

    @abc.abstractmethod
    def _result(self, **fields: Any) -> ResultT:
        """Build the typed result."""

    def infer(self, inputs: dict[str, np.ndarray], geometry: Geometry, preprocess_ms: float = 0.0) -> ResultT:
        """Engine and post-process on already pre-processed inputs (the pipeline pre-processes elsewhere)."""
        start = time.perf_counter()
        outputs = self.engine.infer(inputs)
        inferred = time.perf_counter()
        if len(outputs) != len(self.manifest.outputs):
            raise EngineError(f"model returned {len(outputs)} outputs, manifest names {len(self.manifest.outputs)}")
        predictions = self.post_process(outputs, geometry)
        done = time.perf_counter()
        return self._result(
            task=self.task_name,
            model=self.model.ref,
            predictions=tuple(predictions),
            image_size=geometry.source_size,
            preprocess_ms=preprocess_ms,
            inference_ms=(inferred - start) * 1000,
            postprocess_ms=(done - inferred) * 1000,
        )

    def run(self, image: np.ndarray) -> ResultT:
        """The whole task on one BGR image."""
        start = time.perf_counter()
        inputs, geometry = self.pre_process(image)
        return self.infer(inputs, geometry, (time.perf_counter() - start) * 1000)

    @property
    def backend(self) -> str:
        """The engine backend actually running the model ("tensorrt", "onnxruntime"), after any fallback."""
        return self.engine.name

    def label(self, class_id: int) -> str:
        """The label of a class id, or `class_<id>` when the labels file is shorter or leaves the id unnamed."""
        if 0 <= class_id < len(self.labels) and self.labels[class_id] != "???":
            return self.labels[class_id]
        return f"class_{class_id}"
