"""Object detection: NanoDet decode (distribution over box sides) and class-wise NMS, or the TensorFlow Detection
Zoo signature (boxes, classes, scores, count of `TFLite_Detection_PostProcess`, already suppressed)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from edgevision.engines.base import EngineError
from edgevision.models.manifest import DetectionPostprocess, ZooDetectionPostprocess
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


_ROLE_WORDS = {"boxes": "box", "classes": "class", "scores": "score", "count": "num"}


def map_zoo_outputs(named: dict[str, np.ndarray], given: dict[str, str]) -> dict[str, np.ndarray]:
    """role (boxes, classes, scores, count) -> array, never by position: the names the manifest gives; then the
    operator's own output names (`TFLite_Detection_PostProcess`, `:1` classes, `:2` scores, `:3` count); then
    words in the names (detection_boxes, ...); then shape (boxes [1,N,4], count one value) and values (class ids
    are whole numbers, scores are not all whole numbers). EngineError when the outputs cannot be told apart."""
    roles: dict[str, str] = dict(given)
    op_suffix = {"": "boxes", ":0": "boxes", ":1": "classes", ":2": "scores", ":3": "count"}
    for name in named:
        if name.startswith("TFLite_Detection_PostProcess"):
            role = op_suffix.get(name[len("TFLite_Detection_PostProcess") :])
            if role and role not in roles:
                roles[role] = name
    for role, word in _ROLE_WORDS.items():
        matches = [n for n in named if word in n.lower() and n not in roles.values()]
        if role not in roles and len(matches) == 1:
            roles[role] = matches[0]
    rest = [n for n in named if n not in roles.values()]
    for name in list(rest):
        shape = named[name].shape
        if "boxes" not in roles and len(shape) == 3 and shape[-1] == 4:
            roles["boxes"] = name
            rest.remove(name)
        elif "count" not in roles and named[name].size == 1:
            roles["count"] = name
            rest.remove(name)
    whole = [n for n in rest if np.array_equal(named[n], np.round(named[n]))]
    if "classes" not in roles and len(whole) == 1:
        roles["classes"] = whole[0]
        rest.remove(whole[0])
    if "scores" not in roles and len(rest) == 1:
        roles["scores"] = rest[0]
    missing = [role for role in ("boxes", "classes", "scores") if role not in roles]
    if missing:
        raise EngineError(
            f"cannot tell the Detection Zoo outputs {missing} apart among {sorted(named)}: name them in model.json "
            "(postprocess.boxes / classes / scores / count)"
        )
    return {role: named[name] for role, name in roles.items()}


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

    def _zoo(  # pylint: disable=too-many-locals
        self, outputs: list[np.ndarray], geometry: Geometry, params: ZooDetectionPostprocess
    ) -> tuple[Prediction, ...]:
        """The Detection Zoo signature: normalised (ymin, xmin, ymax, xmax) boxes above the score threshold."""
        found = map_zoo_outputs(dict(zip(self.manifest.outputs, outputs)), params.named())
        boxes = np.asarray(found["boxes"], dtype=np.float32).reshape(-1, 4)
        classes = np.rint(np.asarray(found["classes"], dtype=np.float32).reshape(-1)).astype(np.int64)
        scores = np.asarray(found["scores"], dtype=np.float32).reshape(-1)
        n = min(
            len(boxes), len(classes), len(scores), *(int(c) for c in np.asarray(found.get("count", [])).reshape(-1)[:1])
        )
        keep = [i for i in np.argsort(-scores[:n], kind="stable") if scores[i] >= params.score_threshold]
        keep = np.asarray(keep[: params.max_detections], dtype=np.int64)
        width, height = geometry.source_size
        # normalised -> model-input pixels -> source pixels
        x1, y1 = geometry.to_source(
            boxes[keep, 1] * width * geometry.scale_x, boxes[keep, 0] * height * geometry.scale_y
        )
        x2, y2 = geometry.to_source(
            boxes[keep, 3] * width * geometry.scale_x, boxes[keep, 2] * height * geometry.scale_y
        )
        return tuple(
            Prediction(
                self.label(int(classes[k])),
                float(scores[k]),
                int(classes[k]),
                box=(float(a), float(b), float(c), float(d)),
            )
            for k, a, b, c, d in zip(keep, x1, y1, x2, y2)
        )

    def post_process(self, outputs: list[np.ndarray], geometry: Geometry) -> tuple[Prediction, ...]:
        params = self.manifest.post
        if isinstance(params, ZooDetectionPostprocess):
            return self._zoo(outputs, geometry, params)
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
