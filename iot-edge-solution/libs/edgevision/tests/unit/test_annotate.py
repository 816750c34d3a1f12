"""Annotation drawn on real photos with real results."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgevision.annotate import AnnotationError, annotate, encode_jpeg
from edgevision.tasks.results import Prediction, TaskResult


def _result(task: str, predictions: tuple[Prediction, ...]) -> TaskResult:
    return TaskResult(task=task, model="m:1", predictions=predictions, image_size=(0, 0))


def test_classification_labels_and_footer_change_pixels_only_where_drawn(media) -> None:
    image = media.image("coffee.png")
    out = annotate(image, _result("classification", (Prediction("espresso", 0.95),)), "2026-12-01T00:00:00.000Z")
    assert out.shape == image.shape and out is not image
    changed = np.any(out != image, axis=2)
    assert changed[:40, :200].any()  # the label, top left
    assert changed[-30:, :].any()  # the footer
    assert not changed[image.shape[0] // 2 - 20 : image.shape[0] // 2 + 20, image.shape[1] // 2].any()
    assert np.array_equal(media.image("coffee.png"), image)  # the input is untouched


def test_detection_boxes_are_drawn_where_the_box_is(media) -> None:
    image = media.image("dog.jpg")
    out = annotate(
        image, _result("detection", (Prediction("dog", 0.7, 16, (120.0, 220.0, 320.0, 540.0)),)), highlight="dog"
    )
    assert (out[300, 120] != image[300, 120]).any()  # left edge of the box
    assert (out[300, 220] == image[300, 220]).all()  # inside, away from the label


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "HxWx3 uint8"),
        (np.zeros((10, 10), np.uint8), "HxWx3 uint8"),
        (np.zeros((10, 10, 3), np.float32), "HxWx3 uint8"),
    ],
)
def test_bad_images_are_refused(image: np.ndarray, message: str) -> None:
    with pytest.raises(AnnotationError, match=message):
        annotate(image, _result("classification", ()))


def test_jpeg_encoding_round_trips_and_checks_quality() -> None:
    image = np.full((32, 48, 3), 128, np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    with pytest.raises(AnnotationError, match="quality"):
        encode_jpeg(image, quality=0)


@pytest.mark.parametrize("width", [120, 224, 320])
def test_a_long_caption_fits_inside_the_image(media, width: int) -> None:
    """The footer (model, capture time, extra) on a narrow frame: drawn smaller or cut, never past the right
    edge, so the last columns of the image stay as they were."""
    photo = media.image("coffee.png")
    image = cv2.resize(photo, (width, width * photo.shape[0] // photo.shape[1]))
    result = TaskResult(
        task="classification",
        model="efficientnet-lite0:2",
        predictions=(Prediction("espresso", 0.95),),
        image_size=(0, 0),
    )
    out = annotate(image, result, "2026-12-04T15:45:12.345Z", extra="12.5 fps | a long note")
    changed = np.any(out != image, axis=2)
    assert changed[-20:, :].any(), "the footer is drawn"
    assert not changed[:, -3:].any(), "nothing drawn in the last columns: the caption stops inside the image"
