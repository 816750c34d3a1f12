"""Which predictions answer a requested class. A label may list synonyms separated by commas (ImageNet's
"tabby, tabby cat"); a request names any one of them, or the whole label, in any case."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from edgevision.tasks.results import Prediction, TaskResult


def normalize(name: str) -> str:
    """Lower case, single spaces, no spaces at the ends."""
    return " ".join(name.lower().split())


@lru_cache(maxsize=8192)
def synonyms(label: str) -> frozenset[str]:
    """The names a label answers to: the whole label and each comma-separated part, normalized."""
    parts = {normalize(part) for part in label.split(",")}
    parts.add(normalize(label))
    parts.discard("")
    return frozenset(parts)


def label_matches(class_name: str, label: str) -> bool:
    """True when `class_name` names `label` (or one of its synonyms)."""
    return normalize(class_name) in synonyms(label)


def model_can_output(class_name: str, labels: Sequence[str]) -> bool:
    """True when some label of the model answers to `class_name`."""
    wanted = normalize(class_name)
    return any(wanted in synonyms(label) for label in labels)


def best_match(class_name: str, result: TaskResult, threshold_percent: float) -> Prediction | None:
    """The most confident prediction of `result` that names `class_name` at or above the threshold (percent)."""
    wanted = normalize(class_name)
    best: Prediction | None = None
    for prediction in result.predictions:
        if prediction.confidence * 100 + 1e-9 < threshold_percent or wanted not in synonyms(prediction.label):
            continue
        if best is None or prediction.confidence > best.confidence:
            best = prediction
    return best
