"""Reduced JPEG decoding: the size from the header, the largest 1/2, 1/4, 1/8 scale that keeps the model's input
size, full decoding for anything else."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgevision.tasks import ImageError, decode_image_reduced, jpeg_size


def jpeg(media, width: int, height: int, progressive: bool = False) -> bytes:
    """The bundled dog photo at width x height as JPEG."""
    image = cv2.resize(media.image("dog.jpg"), (width, height), interpolation=cv2.INTER_AREA)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    return cv2.imencode(".jpg", image, params)[1].tobytes()


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_reads_the_header(media, progressive: bool) -> None:
    assert jpeg_size(jpeg(media, 1601, 899, progressive)) == (1601, 899)
    assert jpeg_size(media.path("squirrel_cls.jpg").read_bytes()) == (535, 426)
    assert jpeg_size(media.path("coffee.png").read_bytes()) is None
    assert jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"") is None


@pytest.mark.parametrize(
    ("size", "minimum", "expected"),
    [
        ((1920, 1080), (256, 256), (480, 270)),  # 1/4: the shorter side 270 >= 256; 1/8 would be 135
        ((2048, 2048), (256, 256), (256, 256)),  # exactly 1/8
        ((640, 480), (256, 256), (640, 480)),  # 1/2 is 240 high: full decode
        ((1001, 601), (300, 300), (501, 301)),  # libjpeg rounds up
        ((3000, 2000), (416, 416), (750, 500)),
    ],
)
def test_the_largest_reduction_that_keeps_the_input_size(media, size, minimum, expected) -> None:
    image, full = decode_image_reduced(jpeg(media, *size), minimum)
    assert full == size and (image.shape[1], image.shape[0]) == expected


def test_other_formats_decode_in_full_and_garbage_is_an_image_error(media) -> None:
    data = media.path("coffee.png").read_bytes()
    image, full = decode_image_reduced(data, (32, 32))
    assert (
        full == (image.shape[1], image.shape[0])
        and image.shape[:2] == cv2.imread(str(media.path("coffee.png"))).shape[:2]
    )
    with pytest.raises(ImageError):
        decode_image_reduced(b"\xff\xd8\xff\xc0 not really a jpeg", (32, 32))
    assert isinstance(image, np.ndarray)
