"""Model tasks: classification, detection and text detection, each pre-process -> engine -> post-process."""

from __future__ import annotations

from edgevision.engines.base import Engine
from edgevision.models.repository import LoadedModel
from edgevision.tasks.base import Task
from edgevision.tasks.classification import ClassificationTask
from edgevision.tasks.detection import DetectionTask
from edgevision.tasks.preprocess import (
    Geometry,
    ImageError,
    Preprocessor,
    decode_image,
    decode_image_reduced,
    jpeg_size,
)
from edgevision.tasks.results import (
    ClassificationResult,
    DetectionResult,
    Prediction,
    TaskResult,
    TextDetectionResult,
)
from edgevision.tasks.text_detection import TextDetectionTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "text_detection": TextDetectionTask,
}


def create_task(model: LoadedModel, engine: Engine) -> Task:
    """The task class the manifest names, over a loaded engine."""
    return TASKS[model.manifest.task](model, engine)


__all__ = [
    "TASKS",
    "ClassificationResult",
    "ClassificationTask",
    "DetectionResult",
    "DetectionTask",
    "Geometry",
    "ImageError",
    "Prediction",
    "Preprocessor",
    "Task",
    "TaskResult",
    "TextDetectionResult",
    "TextDetectionTask",
    "create_task",
    "decode_image",
    "decode_image_reduced",
    "jpeg_size",
]
