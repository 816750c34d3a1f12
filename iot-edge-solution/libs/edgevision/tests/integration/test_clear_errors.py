"""One table of the failures a user meets first, each with the error class and the words it must carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.engines import EngineLoadError
from edgevision.frames import (
    EndOfStreamError,
    SourceNotFoundError,
    SourceOpenError,
    SourceOptions,
    UnsupportedSourceError,
    open_source,
)
from edgevision.models import ManifestError, ModelFileError, ModelRepository
from edgevision.vision import build_task


def end_of_file_source(_tmp_path: Path, make_video) -> None:
    """End of file source."""
    video = make_video([np.zeros((64, 64, 3), np.uint8)] * 3, "three.avi")
    with open_source(str(video), SourceOptions(loop=False)) as source:
        for _ in range(4):
            source.read()


def unreadable_file(tmp_path: Path, _make_video) -> None:
    """Unreadable file."""
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00garbage" * 1000)
    open_source(str(path)).open()


def missing_file(tmp_path: Path, _make_video) -> None:
    """Missing file."""
    open_source(str(tmp_path / "nope.mp4")).open()


def bad_camera_path(_tmp_path: Path, _make_video) -> None:
    """Bad camera path."""
    open_source("ftp://camera.local/stream").open()


def copy_model(tmp_path: Path) -> Path:
    """Copy model."""
    source = Path(__file__).resolve().parents[4] / "models" / "efficientnet-lite0" / "1"
    target = tmp_path / "efficientnet-lite0" / "1"
    target.mkdir(parents=True)
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def missing_model_file(tmp_path: Path, _make_video) -> None:
    """Missing model file."""
    folder = copy_model(tmp_path)
    (folder / "model.onnx").unlink()
    ModelRepository(tmp_path).load("efficientnet-lite0")


def corrupt_model_file(tmp_path: Path, _make_video) -> None:
    """Corrupt model file."""
    folder = copy_model(tmp_path)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    ModelRepository(tmp_path).load("efficientnet-lite0")


def corrupt_model_file_unverified(tmp_path: Path, _make_video) -> None:
    """Corrupt model file unverified."""
    # skip the checksum: the engine itself must refuse the file with a clear error
    folder = copy_model(tmp_path)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    build_task(ModelRepository(tmp_path).load("efficientnet-lite0", verify=False))


def manifest_missing_field(tmp_path: Path, _make_video) -> None:
    """Manifest missing field."""
    folder = copy_model(tmp_path)
    manifest = json.loads((folder / "model.json").read_text())
    del manifest["preprocess"]
    (folder / "model.json").write_text(json.dumps(manifest))
    ModelRepository(tmp_path).load("efficientnet-lite0")


@pytest.mark.parametrize(
    "action, expected_error, fragments",
    [
        (end_of_file_source, EndOfStreamError, ["three.avi"]),
        (unreadable_file, SourceOpenError, ["broken.mp4"]),
        (missing_file, SourceNotFoundError, ["nope.mp4"]),
        (bad_camera_path, UnsupportedSourceError, ["ftp://"]),
        (missing_model_file, ModelFileError, ["model.onnx", "does not exist"]),
        (corrupt_model_file, ModelFileError, ["model.onnx", "corrupt"]),
        (corrupt_model_file_unverified, EngineLoadError, ["model.onnx"]),
        (manifest_missing_field, ManifestError, ["preprocess", "missing required field"]),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_clear_errors(tmp_path: Path, make_video, action, expected_error, fragments: list[str]) -> None:
    """Test clear errors."""
    with pytest.raises(expected_error) as caught:
        action(tmp_path, make_video)
    for fragment in fragments:
        assert fragment in str(caught.value)
