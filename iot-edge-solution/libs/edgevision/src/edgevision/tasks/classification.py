"""Image classification: top-k classes with labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.models.manifest import ClassificationPostprocess
from edgevision.tasks.base import Task
from edgevision.tasks.preprocess import Geometry
from edgevision.tasks.results import ClassificationResult, Prediction


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class ClassificationTask(Task[ClassificationResult]):
    """Top-k over the first output; softmax when the manifest says the model outputs logits."""

    task_name = "classification"

    def post_process(self, outputs: list[np.ndarray], geometry: Geometry) -> tuple[Prediction, ...]:
        params = self.manifest.post
        assert isinstance(params, ClassificationPostprocess)
        scores = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        if params.softmax:
            scores = softmax(scores)
        k = min(params.top_k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return tuple(Prediction(self.label(int(i)), float(scores[i]), int(i)) for i in top)

    def _result(self, **fields: Any) -> ClassificationResult:
        return ClassificationResult(**fields)
