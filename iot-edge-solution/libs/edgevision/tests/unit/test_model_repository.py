"""The model repository: finding versions, validating manifests, and clear errors for broken models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevision.models import (
    ManifestError,
    ModelFileError,
    ModelNotFoundError,
    ModelRepository,
    TextDetectionPostprocess,
)

REQUIRED_FIELDS = [
    "name",
    "version",
    "task",
    "file",
    "sha256",
    "license",
    "labels",
    "input",
    "outputs",
    "preprocess",
    "postprocess",
]


def edit_manifest(folder: Path, change) -> None:
    """Apply `change` to the manifest dict in `folder` and write it back."""
    path = folder / "model.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_bundled_models_load(models_dir: Path) -> None:
    repository = ModelRepository(models_dir)
    assert {"efficientnet-lite0", "nanodet-m-416", "ppocr-det"} <= set(repository.names())
    for name, task in [
        ("efficientnet-lite0", "classification"),
        ("nanodet-m-416", "detection"),
        ("ppocr-det", "text_detection"),
    ]:
        model = repository.load(name)
        assert model.manifest.task == task
        assert model.model_path.is_file()
    assert len(repository.load("efficientnet-lite0").labels) == 1000
    assert len(repository.load("nanodet-m-416").labels) == 80
    assert isinstance(repository.load("ppocr-det").manifest.post, TextDetectionPostprocess)


def test_newest_version_wins_and_explicit_version(model_copy) -> None:
    one = model_copy()
    two = one.parent / "10"
    two.mkdir()
    for item in one.iterdir():
        (two / item.name).write_bytes(item.read_bytes())
    edit_manifest(two, lambda d: d.update(version="10"))
    repository = ModelRepository(one.parent.parent)
    assert repository.versions("efficientnet-lite0") == ["1", "10"]
    assert repository.load("efficientnet-lite0").manifest.version == "10"
    assert repository.load("efficientnet-lite0", "1").manifest.version == "1"


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_manifest_missing_field_is_named(model_copy, field: str) -> None:
    folder = model_copy()
    edit_manifest(folder, lambda d: d.pop(field))
    with pytest.raises(ManifestError, match=rf"{field}: missing required field"):
        ModelRepository.load_folder(folder)


@pytest.mark.parametrize(
    "change, expected_error, fragment",
    [
        (lambda d: d.update(task="segmentation"), ManifestError, "task"),
        (lambda d: d.update(sha256="abc"), ManifestError, "sha256"),
        (lambda d: d["input"].update(shape=[3, 224, 224]), ManifestError, "4 axes"),
        (lambda d: d["preprocess"].update(std=[0, 1, 1]), ManifestError, "std values must be > 0"),
        (lambda d: d["preprocess"]["resize"].pop("size"), ManifestError, "needs size"),
        (lambda d: d["preprocess"].update(color="HSV"), ManifestError, "preprocess.color"),
        (lambda d: d.update(labels=None), ManifestError, "needs a labels file"),
        (lambda d: d.update(unexpected=1), ManifestError, "unexpected"),
        (lambda d: d.update(postprocess={"decoder": "db"}), ManifestError, "postprocess"),
        (lambda d: d.update(file="missing.onnx"), ModelFileError, "does not exist"),
        (lambda d: d.update(labels="nolabels.txt"), ModelFileError, "labels file"),
    ],
)
def test_bad_manifest_values(model_copy, change, expected_error, fragment: str) -> None:
    folder = model_copy()
    edit_manifest(folder, change)
    with pytest.raises(expected_error, match=fragment):
        ModelRepository.load_folder(folder)


def test_detection_heads_must_name_real_outputs(model_copy) -> None:
    folder = model_copy("nanodet-m-416")
    edit_manifest(folder, lambda d: d["postprocess"]["heads"][0].update(scores="nope"))
    with pytest.raises(ManifestError, match="nope"):
        ModelRepository.load_folder(folder)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"\xff\xfe\x00"])
def test_manifest_not_a_json_object(model_copy, content: bytes) -> None:
    folder = model_copy()
    (folder / "model.json").write_bytes(content)
    with pytest.raises(ManifestError, match="model.json"):
        ModelRepository.load_folder(folder)


def test_corrupt_model_file_fails_its_checksum(model_copy) -> None:
    folder = model_copy()
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt or was replaced"):
        ModelRepository.load_folder(folder)


def test_empty_labels_file(model_copy) -> None:
    folder = model_copy()
    (folder / "labels.txt").write_text("\n\n")
    with pytest.raises(ModelFileError, match="empty"):
        ModelRepository.load_folder(folder)


def test_unknown_name_and_version(models_dir: Path, tmp_path: Path) -> None:
    repository = ModelRepository(models_dir)
    with pytest.raises(ModelNotFoundError, match="efficientnet-lite0"):  # lists the models there
        repository.load("resnet-9000")
    with pytest.raises(ModelNotFoundError, match="no version '7'"):
        repository.load("efficientnet-lite0", "7")
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        ModelRepository(tmp_path / "nowhere")
