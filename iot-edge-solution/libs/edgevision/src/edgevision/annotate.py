"""One way to draw what the model saw on a frame: labels with confidences, boxes of detections, text regions, the
model and the capture time. The two-factor results and the live preview both use it, so an image in a blob and
the preview look the same."""

from __future__ import annotations

import cv2
import numpy as np

from edgevision.tasks.results import Prediction, TaskResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GREEN = (60, 200, 60)
_YELLOW = (0, 215, 255)
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


class AnnotationError(ValueError):
    """The image cannot be annotated or encoded (empty, wrong shape or type)."""


def _scale_for(image: np.ndarray) -> float:
    return max(0.4, min(image.shape[0], image.shape[1]) / 720)


MIN_TEXT_SCALE = 0.3


def fit_text(text: str, max_width: int, scale: float) -> tuple[str, float, int]:
    """`text`, the font scale and the thickness at which it fits in `max_width` pixels: the scale shrinks down to
    MIN_TEXT_SCALE, then the text is cut with "..." at its end."""
    while True:
        thickness = max(1, round(scale * 1.5))
        width = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
        if width <= max_width or scale <= MIN_TEXT_SCALE:
            break
        scale = max(MIN_TEXT_SCALE, scale * 0.9)
    while width > max_width and len(text) > 3:
        text = text[: max(len(text) - 4, 0)] + "..."
        width = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    return text, scale, thickness


def _label_box(
    image: np.ndarray, text: str, origin: tuple[int, int], scale: float, color: tuple[int, int, int]
) -> None:
    """Text on a filled background; `origin` is the top-left corner, kept inside the image; text too wide for
    the image is drawn smaller, then cut (a caption must not run past the right edge)."""
    left = int(min(max(origin[0], 0), image.shape[1] - 1))
    text, scale, thickness = fit_text(text, max(image.shape[1] - left - 6, 1), scale)
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    x = int(min(max(origin[0], 0), max(image.shape[1] - width - 4, 0)))
    y = int(min(max(origin[1], 0), max(image.shape[0] - height - baseline - 4, 0)))
    cv2.rectangle(image, (x, y), (x + width + 4, y + height + baseline + 4), color, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y + height + 2), _FONT, scale, _BLACK, thickness, cv2.LINE_AA)


def _matches(prediction: Prediction, highlight: str | None) -> bool:
    return highlight is not None and highlight in prediction.label


def _draw_top_labels(out: np.ndarray, result: TaskResult, highlight: str | None, max_labels: int, scale: float) -> None:
    top = sorted(result.predictions, key=lambda p: p.confidence, reverse=True)[:max_labels]
    y = 4
    for prediction in top:
        color = _YELLOW if _matches(prediction, highlight) else _GREEN
        _label_box(out, f"{prediction.label} {prediction.confidence:.0%}", (4, y), scale, color)
        y += int(32 * scale) + 6


def _draw_regions(out: np.ndarray, result: TaskResult, highlight: str | None, scale: float) -> None:
    line = max(1, round(scale * 2))
    for prediction in result.predictions:
        color = _YELLOW if _matches(prediction, highlight) else _GREEN
        if prediction.box is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in prediction.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, line)
            label = f"{prediction.label} {prediction.confidence:.0%}"
            _label_box(out, label, (x1, y1 - int(30 * scale)), scale, color)
        elif prediction.polygon is not None:
            points = np.array([[int(round(x)), int(round(y))] for x, y in prediction.polygon], np.int32)
            cv2.polylines(out, [points], True, color, line)


def annotate(
    image: np.ndarray,
    result: TaskResult,
    captured_at: str | None = None,
    highlight: str | None = None,
    max_labels: int = 3,
    extra: str | None = None,
) -> np.ndarray:
    """A copy of the BGR `image` with `result` drawn on it.

    Classification: the top `max_labels` labels with confidences, top left. Detection: each box with its label and
    confidence. Text detection: each region's outline. `highlight` (a label) is drawn in yellow, the rest in green.
    The footer holds the model, the capture time and `extra` (e.g. the FPS)."""
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        shape = None if image is None else image.shape
        raise AnnotationError(f"expected an HxWx3 uint8 BGR image, got shape {shape}")
    out = image.copy()
    scale = _scale_for(out)
    if result.task == "classification":
        _draw_top_labels(out, result, highlight, max_labels, scale)
    _draw_regions(out, result, highlight, scale)
    footer = " | ".join(part for part in (result.model, captured_at, extra) if part)
    if footer:
        _label_box(out, footer, (4, out.shape[0]), scale * 0.8, _WHITE)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of a BGR image."""
    if not 1 <= quality <= 100:
        raise AnnotationError(f"JPEG quality must be 1..100, got {quality}")
    if image is None or image.size == 0:
        raise AnnotationError("cannot encode an empty image")
    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise AnnotationError(f"OpenCV could not encode an image of shape {image.shape} as JPEG")
    return data.tobytes()
