"""Pre-processing from manifests: sizes, crops, colour, normalisation, mapping back, and bad images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.models import InputSpec, ModelRepository, PreprocessSpec, ResizeSpec
from edgevision.tasks import ImageError, Preprocessor, decode_image
from edgevision.tasks.preprocess import _INTERPOLATION

ROOT = Path(__file__).resolve().parents[5]
MEDIA = ROOT / "iot-edge-solution" / "media"
MODELS = ROOT / "iot-edge-solution" / "models"


def make(
    resize: dict,
    crop: int | None = None,
    color: str = "RGB",
    layout: str = "NCHW",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
) -> Preprocessor:
    """A pre-processor for a dynamic-shape input with the given parameters."""
    spec = PreprocessSpec(color=color, resize=ResizeSpec(**resize), center_crop=crop, mean=mean, std=std, layout=layout)
    return Preprocessor(spec, InputSpec(name="x", shape=(-1, 3, -1, -1)))


def test_shorter_side_then_centre_crop_and_geometry() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    tensor, geometry = make({"mode": "shorter_side", "size": 256}, crop=224)(image)
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == np.float32
    assert geometry.scale_x == pytest.approx(341 / 640)
    assert (geometry.offset_x, geometry.offset_y) == ((341 - 224) // 2, 16)
    # the centre of the crop maps back to the centre of the image
    x, y = geometry.to_source(112.0, 112.0)
    assert float(x) == pytest.approx(320, abs=2) and float(y) == pytest.approx(240, abs=2)


def test_stretch_maps_corners_back_and_clips() -> None:
    image = np.zeros((576, 768, 3), np.uint8)
    tensor, geometry = make({"mode": "stretch", "width": 416, "height": 416})(image)
    assert tensor.shape == (1, 3, 416, 416)
    x, y = geometry.to_source(np.array([0.0, 416.0, 500.0]), np.array([0.0, 416.0, -5.0]))
    np.testing.assert_allclose(x, [0, 768, 768])
    np.testing.assert_allclose(y, [0, 576, 0])


@pytest.mark.parametrize(
    "size, limit, expected",
    [((100, 200), 736, (736, 1472)), ((1000, 1500), 736, (992, 1504)), ((33, 50), None, (32, 64))],
)
def test_multiple_of_rounds_each_side(size, limit, expected) -> None:
    height, width = size
    resize = {"mode": "multiple_of", "multiple": 32}
    if limit:
        resize["limit_shorter_side"] = limit
    tensor, _ = make(resize, color="BGR")(np.zeros((height, width, 3), np.uint8))
    assert tensor.shape[2:] == expected


def test_colour_order_normalisation_and_nhwc() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    stretch = {"mode": "stretch", "width": 4, "height": 4}
    rgb, _ = make(stretch, mean=(30, 20, 10), std=(2, 2, 2))(image)
    np.testing.assert_allclose(rgb[0, :, 0, 0], [0, 0, 0])
    bgr, _ = make(stretch, color="BGR", layout="NHWC", mean=(0, 0, 0), std=(10, 10, 10))(image)
    assert bgr.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(bgr[0, 0, 0], [1, 2, 3])


def test_grey_and_bgra_images_are_converted() -> None:
    pre = make({"mode": "stretch", "width": 8, "height": 8})
    assert pre(np.zeros((10, 10), np.uint8))[0].shape == (1, 3, 8, 8)
    assert pre(np.zeros((10, 10, 4), np.uint8))[0].shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    "image, fragment",
    [
        ("not an array", "expected an image array"),
        (np.zeros((10, 10, 3), np.float32), "8-bit"),
        (np.zeros((1, 10, 3), np.uint8), "at least 2x2"),
        (np.zeros((10, 10, 2), np.uint8), "HxWx3"),
        (np.zeros((2, 10, 10, 3), np.uint8), "HxWx3"),
    ],
)
def test_bad_images_are_refused(image, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        make({"mode": "stretch", "width": 8, "height": 8})(image)


def test_crop_larger_than_image_is_an_error() -> None:
    with pytest.raises(ImageError, match="centre crop"):
        make({"mode": "stretch", "width": 100, "height": 100}, crop=224)(np.zeros((50, 50, 3), np.uint8))


@pytest.mark.parametrize("data", [b"", b"definitely not a jpeg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_decode_image_refuses_non_images(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode_image(data)


def _reference_tensor(pre: Preprocessor, image: np.ndarray) -> np.ndarray:
    """The plain recipe, step by step with a copy each: resize, crop, cvtColor to RGB, (x - mean) / std, layout."""
    spec = pre.spec
    height, width = image.shape[:2]
    new_w, new_h = pre._target_size(width, height)  # pylint: disable=protected-access
    resized = cv2.resize(image, (new_w, new_h), interpolation=_INTERPOLATION[spec.resize.interpolation])
    if spec.center_crop:
        left, top = (new_w - spec.center_crop) // 2, (new_h - spec.center_crop) // 2
        resized = resized[top : top + spec.center_crop, left : left + spec.center_crop]
    if spec.color == "RGB":
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    tensor = (resized.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
    tensor = tensor.transpose(2, 0, 1) if spec.layout == "NCHW" else tensor
    return tensor[np.newaxis]


@pytest.mark.parametrize("model", ["efficientnet-lite0", "nanodet-m-416", "ppocr-det"])
def test_bundled_models_tensors_equal_the_plain_recipe_on_real_frames(model: str) -> None:
    """The channel swap read as a view and the planar arithmetic give the plain recipe's tensor (within float32
    rounding of x * (1/std) against x / std) on frames of the demo video and the bundled photos."""
    pre = ModelRepository(MODELS).load(model).manifest
    preprocessor = Preprocessor(pre.preprocess, pre.input)
    capture = cv2.VideoCapture(str(MEDIA / "demo.mp4"))
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    images = [*frames, cv2.imread(str(MEDIA / "dog.jpg")), cv2.imread(str(MEDIA / "squirrel_cls.jpg"))]
    for image in images:
        tensor, _ = preprocessor(image)
        expected = _reference_tensor(preprocessor, image)
        assert tensor.shape == expected.shape and tensor.dtype == np.float32
        np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-6)
