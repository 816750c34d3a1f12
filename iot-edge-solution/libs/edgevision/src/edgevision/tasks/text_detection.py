"""Text detection: the DB (differentiable binarisation) post-process of PP-OCR, to quadrilaterals."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edgevision.models.manifest import TextDetectionPostprocess
from edgevision.tasks.base import Task
from edgevision.tasks.preprocess import Geometry
from edgevision.tasks.results import Prediction, TextDetectionResult


def ordered_corners(rect: tuple) -> np.ndarray:
    """The 4 corners of a rotated rect, clockwise from the top-left one."""
    points = cv2.boxPoints(rect)
    points = points[np.argsort(points[:, 0])]
    left, right = points[:2], points[2:]
    top_left, bottom_left = left[np.argsort(left[:, 1])]
    top_right, bottom_right = right[np.argsort(right[:, 1])]
    return np.array([top_left, top_right, bottom_right, bottom_left], dtype=np.float32)


def region_score(probability: np.ndarray, corners: np.ndarray) -> float:
    """Mean probability inside a polygon (evaluated on its bounding box only, for speed)."""
    height, width = probability.shape
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [width - 1, height - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(corners - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(probability[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def expand_rect(rect: tuple, unclip_ratio: float) -> tuple:
    """Grow a shrunk text kernel back to the text's size: offset distance = area * ratio / perimeter. For a
    rectangle, offsetting every side outwards by d gives a rect 2d wider and taller."""
    (cx, cy), (w, h), angle = rect
    perimeter = 2 * (w + h)
    if perimeter <= 0:
        return rect
    distance = w * h * unclip_ratio / perimeter
    return (cx, cy), (w + 2 * distance, h + 2 * distance), angle


def db_regions(probability: np.ndarray, params: TextDetectionPostprocess) -> list[tuple[np.ndarray, float]]:
    """Quadrilaterals (in probability-map pixels) and their scores from a DB probability map [H,W]."""
    bitmap = (probability > params.thresh).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    regions = []
    for contour in contours[: params.max_candidates]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < params.min_size:
            continue
        score = region_score(probability, ordered_corners(rect))
        if score < params.box_thresh:
            continue
        grown = expand_rect(rect, params.unclip_ratio)
        if min(grown[1]) < params.min_size + 2:
            continue
        regions.append((ordered_corners(grown), score))
    return regions


class TextDetectionTask(Task[TextDetectionResult]):
    """PP-OCR detection model: text regions as quadrilaterals in source-image pixels."""

    task_name = "text_detection"

    def post_process(self, outputs: list[np.ndarray], geometry: Geometry) -> tuple[Prediction, ...]:
        params = self.manifest.post
        assert isinstance(params, TextDetectionPostprocess)
        probability = np.asarray(outputs[0], dtype=np.float32)
        probability = probability.reshape(probability.shape[-2:])
        predictions = []
        for corners, score in db_regions(probability, params):
            xs, ys = geometry.to_source(corners[:, 0], corners[:, 1])
            polygon = tuple((float(x), float(y)) for x, y in zip(xs, ys))
            box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
            predictions.append(Prediction("text", score, 0, box=box, polygon=polygon))
        predictions.sort(key=lambda p: (p.box[1], p.box[0]) if p.box else (0, 0))
        return tuple(predictions)

    def _result(self, **fields: Any) -> TextDetectionResult:
        return TextDetectionResult(**fields)
