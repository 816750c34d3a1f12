"""Object detection: NanoDet decode (distribution over box sides) and class-wise NMS."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from edgevision.models.manifest import DetectionPostprocess
from edgevision.tasks.base import Task
from edgevision.tasks.classification import softmax
from edgevision.tasks.preprocess import Geometry
from edgevision.tasks.results import DetectionResult, Prediction


def nanodet_decode(
    distributions: np.ndarray, anchors: np.ndarray, stride: int, grid_width: int, reg_max: int
) -> np.ndarray:
    """Decode one level's box-side distributions [K,4*(reg_max+1)] at anchor indices [K] (row-major over a
    grid `grid_width` cells wide) into boxes [K,4] (x1, y1, x2, y2) in model-input pixels."""
    bins = distributions.reshape(anchors.shape[0], 4, reg_max + 1)
    distances = (softmax(bins) * np.arange(reg_max + 1, dtype=np.float32)).sum(axis=-1) * stride
    cx = ((anchors % grid_width) + 0.5) * stride
    cy = ((anchors // grid_width) + 0.5) * stride
    return np.stack([cx - distances[:, 0], cy - distances[:, 1], cx + distances[:, 2], cy + distances[:, 3]], axis=1)


def class_wise_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, limit: int
) -> np.ndarray:
    """Indices kept by NMS run separately per class, most confident first."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), 0.0, iou_threshold)
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return kept[np.argsort(-scores[kept])][:limit]


class DetectionTask(Task[DetectionResult]):
    """NanoDet heads named in the manifest; boxes mapped back to source-image pixels."""

    task_name = "detection"

    def _candidates(
        self, named: dict[str, np.ndarray], input_width: int, params: DetectionPostprocess
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (model-input pixels), scores and class ids of every (anchor, class) above the threshold."""
        boxes, scores, classes = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
        for head in params.heads:
            level_scores = np.asarray(named[head.scores], dtype=np.float32)
            level_scores = level_scores.reshape(-1, level_scores.shape[-1])
            distributions = np.asarray(named[head.boxes], dtype=np.float32).reshape(level_scores.shape[0], -1)
            anchors, level_classes = np.nonzero(level_scores > params.score_threshold)
            grid_width = math.ceil(input_width / head.stride)
            boxes.append(nanodet_decode(distributions[anchors], anchors, head.stride, grid_width, params.reg_max))
            scores.append(level_scores[anchors, level_classes])
            classes.append(level_classes)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)

    def post_process(self, outputs: list[np.ndarray], geometry: Geometry) -> tuple[Prediction, ...]:
        params = self.manifest.post
        assert isinstance(params, DetectionPostprocess)
        input_width = round(geometry.source_size[0] * geometry.scale_x)
        boxes, scores, classes = self._candidates(dict(zip(self.manifest.outputs, outputs)), input_width, params)
        keep = class_wise_nms(boxes, scores, classes, params.nms_iou_threshold, params.max_detections)
        x1, y1 = geometry.to_source(boxes[keep, 0], boxes[keep, 1])
        x2, y2 = geometry.to_source(boxes[keep, 2], boxes[keep, 3])
        return tuple(
            Prediction(
                self.label(int(classes[k])),
                float(scores[k]),
                int(classes[k]),
                box=(float(a), float(b), float(c), float(d)),
            )
            for k, a, b, c, d in zip(keep, x1, y1, x2, y2)
        )

    def _result(self, **fields: Any) -> DetectionResult:
        return DetectionResult(**fields)
