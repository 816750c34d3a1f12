"""A small, independent reading of the bundled models, used to check them when they are built.

It follows each `model.json` (pre-processing, outputs, decoder) with plain numpy and OpenCV, so a wrong
manifest shows up here before the library ever loads it. It needs cv2, numpy and onnxruntime only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


@dataclass
class Detection:
    """One detected object."""

    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels


class BundledModel:
    """One `models/<name>/<version>/` folder, run with ONNX Runtime on the CPU."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        self.session = ort.InferenceSession(str(folder / self.manifest["file"]), providers=["CPUExecutionProvider"])
        labels = self.manifest.get("labels")
        self.labels = (folder / labels).read_text(encoding="utf-8").splitlines() if labels else []

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """Frame (BGR, uint8) to the input tensor, as the manifest's `preprocess` says."""
        spec = self.manifest["preprocess"]
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if spec["color"] == "RGB" else bgr
        image = resize(image, spec["resize"])
        crop = spec.get("center_crop")
        if crop:
            top = (image.shape[0] - crop) // 2
            left = (image.shape[1] - crop) // 2
            image = image[top : top + crop, left : left + crop]
        tensor = (image.astype(np.float32) - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
        if spec["layout"] == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis])

    def infer(self, bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the model on a frame; returns its outputs by name."""
        names = self.manifest["outputs"]
        values = self.session.run(names, {self.manifest["input"]["name"]: self.preprocess(bgr)})
        return dict(zip(names, values))


def resize(image: np.ndarray, spec: dict) -> np.ndarray:
    """Resizes as a manifest `resize` block says."""
    height, width = image.shape[:2]
    interpolation = INTERPOLATION[spec.get("interpolation", "linear")]
    mode = spec["mode"]
    if mode == "shorter_side":
        scale = spec["size"] / min(height, width)
        size = (max(spec["size"], round(width * scale)), max(spec["size"], round(height * scale)))
    elif mode == "stretch":
        size = (spec["width"], spec["height"])
    elif mode == "multiple_of":
        scale = 1.0
        limit = spec.get("limit_shorter_side")
        if limit and min(height, width) < limit:
            scale = limit / min(height, width)
        max_side = spec.get("max_side_len")
        if max_side and max(height, width) * scale > max_side:
            scale = max_side / max(height, width)
        multiple = spec["multiple"]
        size = (
            max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple),
        )
    else:
        raise ValueError(f"unknown resize mode {mode}")
    return cv2.resize(image, size, interpolation=interpolation)


def classify(model: BundledModel, bgr: np.ndarray, top_k: int = 3) -> list[tuple[str, float]]:
    """Top-k labels with softmax probabilities."""
    logits = next(iter(model.infer(bgr).values()))[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:top_k]
    return [(model.labels[i], float(probs[i])) for i in order]


def detect_nanodet(model: BundledModel, bgr: np.ndarray) -> list[Detection]:
    """NanoDet decode: per-bin softmax, distances from anchor centres, class-wise NMS."""
    # pylint: disable=too-many-locals
    post = model.manifest["postprocess"]
    outputs = model.infer(bgr)
    shape = model.manifest["input"]["shape"]
    side_h, side_w = (shape[2], shape[3]) if model.manifest["preprocess"]["layout"] == "NCHW" else shape[1:3]
    bins = np.arange(post["reg_max"] + 1, dtype=np.float32)
    all_boxes, all_scores = [], []
    for head in post["heads"]:
        stride = head["stride"]
        scores = outputs[head["scores"]][0]
        regression = outputs[head["boxes"]][0].reshape(len(scores), 4, -1)
        weights = np.exp(regression - regression.max(axis=2, keepdims=True))
        weights /= weights.sum(axis=2, keepdims=True)
        distances = (weights * bins).sum(axis=2) * stride
        columns = side_w // stride
        index = np.arange(len(scores))
        centre_x = (index % columns + 0.5) * stride
        centre_y = (index // columns + 0.5) * stride
        all_boxes.append(
            np.stack(
                [
                    centre_x - distances[:, 0],
                    centre_y - distances[:, 1],
                    centre_x + distances[:, 2],
                    centre_y + distances[:, 3],
                ],
                axis=1,
            )
        )
        all_scores.append(scores)
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    boxes *= np.array([bgr.shape[1] / side_w, bgr.shape[0] / side_h] * 2, np.float32)
    classes = scores.argmax(axis=1)
    best = scores.max(axis=1)
    found: list[Detection] = []
    for cls in np.unique(classes[best >= post["score_threshold"]]):
        picked = np.where((classes == cls) & (best >= post["score_threshold"]))[0]
        rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes[picked]]
        keep = cv2.dnn.NMSBoxes(rects, best[picked].tolist(), post["score_threshold"], post["nms_iou_threshold"])
        for k in np.array(keep).reshape(-1):
            i = picked[k]
            found.append(Detection(model.labels[cls], float(best[i]), tuple(float(v) for v in boxes[i])))
    found.sort(key=lambda d: -d.score)
    return found[: post["max_detections"]]


def text_boxes(model: BundledModel, bgr: np.ndarray) -> int:
    """Counts DB text regions (no unclip: only the count is checked here)."""
    post = model.manifest["postprocess"]
    prob = next(iter(model.infer(bgr).values()))[0, 0]
    bitmap = (prob > post["thresh"]).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    count = 0
    for contour in contours[: post["max_candidates"]]:
        (_, _), (rect_w, rect_h), _ = cv2.minAreaRect(contour)
        if min(rect_w, rect_h) < post["min_size"]:
            continue
        mask = np.zeros_like(bitmap)
        cv2.drawContours(mask, [contour], -1, 1, thickness=-1)
        if float(prob[mask > 0].mean()) >= post["box_thresh"]:
            count += 1
    return count
