"""Post-processing maths on synthetic tensors whose right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from edgevision.models import TextDetectionPostprocess
from edgevision.tasks.classification import softmax
from edgevision.tasks.detection import class_wise_nms, nanodet_decode
from edgevision.tasks.text_detection import db_regions, expand_rect


def one_hot_sides(sides: list[int], reg_max: int) -> np.ndarray:
    """Distribution logits that put (almost) all mass on the given bin for each of the 4 sides."""
    logits = np.full((4, reg_max + 1), -50.0, dtype=np.float32)
    for side, bin_index in enumerate(sides):
        logits[side, bin_index] = 50.0
    return logits.reshape(1, -1)


@pytest.mark.parametrize("anchor, stride, grid_width", [(0, 8, 52), (53, 8, 52), (100, 32, 13)])
def test_nanodet_decode_places_box_around_anchor_centre(anchor: int, stride: int, grid_width: int) -> None:
    sides = [1, 2, 3, 4]  # left, top, right, bottom in bins
    box = nanodet_decode(one_hot_sides(sides, 10), np.array([anchor]), stride, grid_width, 10)[0]
    cx = (anchor % grid_width + 0.5) * stride
    cy = (anchor // grid_width + 0.5) * stride
    expected = [cx - 1 * stride, cy - 2 * stride, cx + 3 * stride, cy + 4 * stride]
    np.testing.assert_allclose(box, expected, atol=1e-3)


def test_softmax_is_a_distribution() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5, 0.0]], atol=1e-6)


def test_nms_suppresses_overlaps_within_a_class_only() -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [0, 0, 100, 100], [300, 300, 350, 350]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    kept = class_wise_nms(boxes, scores, classes, 0.5, 100)
    assert kept.tolist() == [0, 2, 3]
    assert class_wise_nms(boxes, scores, classes, 0.5, 2).tolist() == [0, 2]
    assert class_wise_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5, 10).size == 0


def test_db_finds_one_region_per_blob_and_grows_it() -> None:
    probability = np.zeros((200, 300), dtype=np.float32)
    probability[50:70, 40:200] = 0.9  # a shrunk text kernel, 160 x 20
    probability[120:140, 100:150] = 0.9
    regions = db_regions(probability, TextDetectionPostprocess(decoder="db"))
    assert len(regions) == 2
    widest = max(regions, key=lambda r: np.ptp(r[0][:, 0]))
    corners, score = widest
    assert score > 0.85
    # the region grows beyond the kernel on every side
    assert corners[:, 0].min() < 40 and corners[:, 0].max() > 199
    assert corners[:, 1].min() < 50 and corners[:, 1].max() > 69


def test_db_ignores_weak_and_tiny_blobs() -> None:
    probability = np.zeros((100, 100), dtype=np.float32)
    probability[10:30, 10:60] = 0.35  # above thresh 0.3 but below box_thresh 0.5
    probability[60:61, 60:62] = 0.99  # smaller than min_size
    assert not db_regions(probability, TextDetectionPostprocess(decoder="db"))


def test_expand_rect_offsets_each_side_by_area_times_ratio_over_perimeter() -> None:
    (_, (w, h), _) = expand_rect(((0, 0), (100, 10), 0), 1.5)
    distance = 100 * 10 * 1.5 / 220
    assert w == pytest.approx(100 + 2 * distance) and h == pytest.approx(10 + 2 * distance)
