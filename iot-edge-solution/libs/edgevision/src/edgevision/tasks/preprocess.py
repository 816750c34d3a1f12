"""Pre-processing from a model's manifest: colour order, resize, centre crop, normalisation, layout."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgevision.errors import EdgeVisionError
from edgevision.models.manifest import InputSpec, PreprocessSpec

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


class ImageError(EdgeVisionError):
    """An image cannot be used as model input (empty, wrong shape or type, undecodable)."""


@dataclass(frozen=True)
class Geometry:
    """How source pixels map to model-input pixels: input = source * scale - offset."""

    source_size: tuple[int, int]  # (width, height)
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_source(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map model-input coordinates back to the source image, clipped to it."""
        width, height = self.source_size
        sx = np.clip((np.asarray(x, dtype=np.float64) + self.offset_x) / self.scale_x, 0, width)
        sy = np.clip((np.asarray(y, dtype=np.float64) + self.offset_y) / self.scale_y, 0, height)
        return sx, sy


def check_image(image: object) -> np.ndarray:
    """An HxWx3 uint8 BGR image, or ImageError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected an image array, got {type(image).__name__}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 2 or image.shape[1] < 2:
        raise ImageError(f"expected an HxWx3 image at least 2x2, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected 8-bit pixels, got {image.dtype}")
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/... bytes into a BGR image; ImageError when they are not an image."""
    if not data:
        raise ImageError("image data is empty")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("data is not a decodable image (JPEG, PNG, BMP, ... expected)")
    return image


_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
# JPEG start-of-frame markers (baseline, progressive, ...): 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header without decoding it; None when `data` is no JPEG or
    the header cannot be found."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return (width, height) if width and height else None
        position += 2 + length
    return None


def decode_image_reduced(data: bytes, min_size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: far less work than a full decode) when the
    reduced image is still at least `min_size` (width, height); other images and formats decode in full.
    Returns the image and the full-size (width, height), to map results back to the photo."""
    size = jpeg_size(data)
    if size is not None:
        width, height = size
        for factor, flag in _REDUCED_FLAGS:
            if -(-width // factor) >= min_size[0] and -(-height // factor) >= min_size[1]:
                image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
                if image is not None:
                    return image, size
                break
    image = decode_image(data)
    return image, (image.shape[1], image.shape[0])


class Preprocessor:
    """Turns a BGR frame into the model's input tensor, remembering the geometry to map results back."""

    def __init__(self, spec: PreprocessSpec, input_spec: InputSpec) -> None:
        self.spec = spec
        self.input_spec = input_spec
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
        self._interpolation = _INTERPOLATION[spec.resize.interpolation]

    def _target_size(self, width: int, height: int) -> tuple[int, int]:
        resize = self.spec.resize
        if resize.mode == "stretch":
            return int(resize.width), int(resize.height)  # type: ignore[arg-type]
        if resize.mode == "shorter_side":
            scale = resize.size / min(width, height)  # type: ignore[operator]
            return max(1, round(width * scale)), max(1, round(height * scale))
        scale = 1.0
        if resize.limit_shorter_side and min(width, height) < resize.limit_shorter_side:
            scale = resize.limit_shorter_side / min(width, height)
        if resize.max_side_len and max(width, height) * scale > resize.max_side_len:
            scale = resize.max_side_len / max(width, height)
        multiple = resize.multiple
        return (
            max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple),
        )

    def min_source_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (width, height) of the same aspect that this pre-processing only shrinks, never
        enlarges: how far a photo of `width` x `height` may be reduced before it is resized."""
        resize = self.spec.resize
        if resize.mode == "stretch":
            return int(resize.width), int(resize.height)  # type: ignore[arg-type]
        if resize.mode == "shorter_side":
            side = int(resize.size)  # type: ignore[arg-type]
            return side, side  # the shorter side stays >= side
        return width, height  # sizes that depend on the source size: no reduction

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        """(pixel - mean) / std as a 1xCxHxW or 1xHxWxC tensor of the input's dtype.

        The 8-bit image is put in the model's layout first, so the per-channel arithmetic runs over whole
        planes (NCHW) instead of broadcasting over a last axis of three values: the same float32 results in
        about a fifth of the time, which the capture thread, where files are pre-processed, gives back to the
        engine. BGR to RGB is a reversed view of the channel axis read by the same arithmetic: no copy of its
        own."""
        if self.spec.color == "RGB":
            image = image[:, :, ::-1]
        if self.spec.layout == "NCHW":
            planar = image.transpose(2, 0, 1)[np.newaxis]
            mean, inv_std = self._mean[:, None, None], self._inv_std[:, None, None]
        else:
            planar = image[np.newaxis]
            mean, inv_std = self._mean, self._inv_std
        tensor = np.empty(planar.shape, np.float32)
        np.subtract(planar, mean, out=tensor, dtype=np.float32, casting="unsafe")
        tensor *= inv_std
        return tensor if self.input_spec.dtype == "float32" else tensor.astype(self.input_spec.dtype)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        image = check_image(image)
        height, width = image.shape[:2]
        new_w, new_h = self._target_size(width, height)
        resized = cv2.resize(image, (new_w, new_h), interpolation=self._interpolation)
        offset_x = offset_y = 0
        crop = self.spec.center_crop
        if crop:
            if crop > new_w or crop > new_h:
                raise ImageError(f"centre crop {crop} is larger than the resized image {new_w}x{new_h}")
            offset_x, offset_y = (new_w - crop) // 2, (new_h - crop) // 2
            resized = resized[offset_y : offset_y + crop, offset_x : offset_x + crop]
        tensor = self._normalise(resized)
        geometry = Geometry((width, height), new_w / width, new_h / height, offset_x, offset_y)
        return tensor, geometry
