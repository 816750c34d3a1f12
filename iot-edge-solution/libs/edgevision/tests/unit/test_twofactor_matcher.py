"""The request matcher: synonyms, case, thresholds, classification and detection results."""

from __future__ import annotations

import pytest

from edgevision.tasks.results import ClassificationResult, DetectionResult, Prediction
from edgevision.twofactor.matcher import best_match, label_matches, model_can_output, synonyms

LABELS = ("tabby, tabby cat", "tiger cat", "Egyptian cat", "coffee mug", "espresso", "cat")


def _classification(*pairs: tuple[str, float]) -> ClassificationResult:
    return ClassificationResult("classification", "m/1", tuple(Prediction(l, c) for l, c in pairs), (640, 480))


def _detection(*pairs: tuple[str, float]) -> DetectionResult:
    predictions = tuple(Prediction(l, c, i, (10.0 * i, 10.0, 50.0 + i, 60.0)) for i, (l, c) in enumerate(pairs))
    return DetectionResult("detection", "d/1", predictions, (640, 480))


@pytest.mark.parametrize(
    ("class_name", "label", "expected"),
    [
        ("tabby", "tabby, tabby cat", True),
        ("Tabby Cat", "tabby, tabby cat", True),
        ("  TABBY   cat ", "tabby, tabby cat", True),
        ("tabby, tabby cat", "tabby, tabby cat", True),
        ("cat", "tabby, tabby cat", False),
        ("tab", "tabby, tabby cat", False),
        ("tiger cat", "tiger cat", True),
        ("tiger", "tiger cat", False),
        ("", "tiger cat", False),
    ],
)
def test_label_matches(class_name: str, label: str, expected: bool) -> None:
    assert label_matches(class_name, label) is expected


def test_synonyms_are_normalized_parts_and_the_whole_label() -> None:
    assert synonyms("Tabby, tabby cat") == {"tabby", "tabby cat", "tabby, tabby cat"}


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [("tabby", True), ("TIGER CAT", True), ("Egyptian cat", True), ("unicorn", False), ("mug", False)],
)
def test_model_can_output(class_name: str, expected: bool) -> None:
    assert model_can_output(class_name, LABELS) is expected
    assert model_can_output(class_name, ()) is False


@pytest.mark.parametrize(
    ("class_name", "threshold", "expected"),
    [
        ("tabby", 60, ("tabby, tabby cat", 0.62)),
        ("tabby", 62, ("tabby, tabby cat", 0.62)),
        ("tabby", 62.1, None),
        ("tiger cat", 20, ("tiger cat", 0.3)),
        ("TIGER CAT", 31, None),
        ("coffee mug", 1, None),
    ],
)
def test_best_match_on_classification(class_name: str, threshold: float, expected: tuple | None) -> None:
    result = _classification(("tabby, tabby cat", 0.62), ("tiger cat", 0.3), ("Egyptian cat", 0.05))
    found = best_match(class_name, result, threshold)
    assert (found.label, found.confidence) == expected if expected else found is None


def test_best_match_on_detection_takes_the_most_confident_box_of_the_class() -> None:
    result = _detection(("cat", 0.55), ("dog", 0.9), ("cat", 0.81), ("Cat", 0.7))
    found = best_match("cat", result, 50)
    assert found is not None and found.confidence == 0.81 and found.box == (20.0, 10.0, 52.0, 60.0)
    assert best_match("cat", result, 82) is None
    assert best_match("person", result, 1) is None
