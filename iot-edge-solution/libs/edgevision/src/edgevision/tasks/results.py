"""Typed results of the model tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One thing the model saw. `box` is (x1, y1, x2, y2) in source-image pixels; `polygon` the corner points
    of a text region, clockwise from top-left, in source-image pixels."""

    label: str
    confidence: float
    class_id: int = -1
    box: tuple[float, float, float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: label, confidence, and box/polygon when the task has them."""
        data: dict[str, Any] = {"label": self.label, "confidence": round(self.confidence, 6)}
        if self.box is not None:
            data["box"] = [round(v, 1) for v in self.box]
        if self.polygon is not None:
            data["polygon"] = [[round(x, 1), round(y, 1)] for x, y in self.polygon]
        return data


@dataclass(frozen=True)
class TaskResult:
    """What one run of a task on one image produced, with per-stage timings in milliseconds."""

    task: str
    model: str
    predictions: tuple[Prediction, ...]
    image_size: tuple[int, int]  # (width, height) of the source image
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> Prediction | None:
        """The most confident prediction, if any."""
        return max(self.predictions, key=lambda p: p.confidence, default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model,
            "task": self.task,
            "predictions": [p.to_dict() for p in self.predictions],
            "inference_ms": round(self.inference_ms, 3),
        }


@dataclass(frozen=True)
class ClassificationResult(TaskResult):
    """Top-k classes, most confident first."""


@dataclass(frozen=True)
class DetectionResult(TaskResult):
    """Boxes with classes, after class-wise NMS, most confident first."""


@dataclass(frozen=True)
class TextDetectionResult(TaskResult):
    """Text regions as quadrilaterals."""
