"""The bundled models on real photos and video, through ONNX Runtime on the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgevision.models import ModelRepository
from edgevision.tasks import ClassificationResult, DetectionResult, TextDetectionResult
from edgevision.vision import build_task

CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby, tabby cat", "Persian cat", "Siamese cat, Siamese"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def repository(models_dir) -> ModelRepository:
    """The repository fixture over a bundled model."""
    return ModelRepository(models_dir)


@pytest.fixture(scope="module")
def classifier(repository):
    """The classifier fixture over a bundled model."""
    task = build_task(repository.load("efficientnet-lite0"), threads=1)
    yield task
    task.engine.close()


@pytest.fixture(scope="module")
def detector(repository):
    """The detector fixture over a bundled model."""
    task = build_task(repository.load("nanodet-m-416"), threads=1)
    yield task
    task.engine.close()


@pytest.fixture(scope="module")
def text_detector(repository):
    """The text detector fixture over a bundled model."""
    task = build_task(repository.load("ppocr-det"), threads=1)
    yield task
    task.engine.close()


def test_chelsea_has_a_cat_class_in_top3(classifier, media) -> None:
    result = classifier.run(media.image("chelsea.png"))
    assert isinstance(result, ClassificationResult)
    top3 = [p.label for p in result.predictions[:3]]
    assert CAT_CLASSES & set(top3), top3
    confidences = [p.confidence for p in result.predictions]
    assert confidences == sorted(confidences, reverse=True)
    assert 0 < sum(confidences) <= 1.0001


def test_coffee_is_espresso_or_a_cup_top1(classifier, media) -> None:
    result = classifier.run(media.image("coffee.png"))
    assert result.top is not None and result.top.label in COFFEE_CLASSES, result.top
    assert result.top.confidence > 0.5


def test_classification_result_json_shape(classifier, media) -> None:
    data = classifier.run(media.image("coffee.png")).to_dict()
    assert set(data) == {"model", "task", "predictions", "inference_ms"}
    assert data["model"] == "efficientnet-lite0:1" and data["task"] == "classification"
    assert set(data["predictions"][0]) == {"label", "confidence"}


def test_person_in_most_vtest_frames(detector, media) -> None:
    capture = cv2.VideoCapture(str(media.path("vtest.avi")))
    frames_with_person, sampled = 0, 0
    try:
        for index in range(0, 600, 30):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            assert ok, f"vtest.avi frame {index} did not decode"
            result = detector.run(frame)
            assert isinstance(result, DetectionResult)
            sampled += 1
            people = [p for p in result.predictions if p.label == "person"]
            frames_with_person += bool(people)
            for person in people:
                x1, y1, x2, y2 = person.box
                # boxes are in source pixels (768 x 576), not model-input pixels (416 x 416)
                assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
    finally:
        capture.release()
    assert frames_with_person / sampled >= 0.8, f"person in {frames_with_person} of {sampled} frames"


def test_dog_photo_has_dog_and_bicycle(detector, media) -> None:
    labels = {p.label for p in detector.run(media.image("dog.jpg")).predictions}
    assert {"dog", "bicycle"} <= labels


def test_text_image_gives_boxes_and_blank_gives_none(text_detector, media) -> None:
    image = media.image("imageTextN.png")
    result = text_detector.run(image)
    assert isinstance(result, TextDetectionResult)
    assert len(result.predictions) >= 5
    height, width = image.shape[:2]
    for region in result.predictions:
        assert len(region.polygon) == 4
        x1, y1, x2, y2 = region.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    blank = np.full((480, 640, 3), 255, np.uint8)
    assert text_detector.run(blank).predictions == ()
