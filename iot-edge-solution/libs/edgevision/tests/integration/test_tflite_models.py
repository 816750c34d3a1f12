"""TensorFlow Lite models end to end: the bundled SSD MobileNet V2 (Coral, uint8, Detection Zoo signature) on
the bundled photos (Debian darknet's dog.jpg, scikit-image's chelsea and coffee), the labels formats, output
mapping by name and shape, MODEL_NAME selection, USE_TENSOR_RT with a TFLite model, and a TFLite classifier."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgevision.config import VisionSettings
from edgevision.engines import EngineError, EngineUnavailableError
from edgevision.files import sha256_of
from edgevision.manager import ModelManager
from edgevision.models import ManifestError, ModelRepository, parse_labels
from edgevision.tasks.detection import map_zoo_outputs
from edgevision.vision import backend_for_model, build_task, build_task_from_settings

if not os.environ.get("CI"):
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")

SSD = "ssd-mobilenet-v2-coco-tflite"
# Coral's file as published (../shared facts; the build script refuses another download).
CORAL_SHA256 = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"


@pytest.fixture(name="ssd", scope="module")
def ssd_fixture():
    """The bundled SSD on LiteRT, one thread."""
    root = Path(__file__).resolve().parents[4] / "models"
    task = build_task(ModelRepository(root).load(SSD), "onnxruntime", threads=1)
    yield task
    task.engine.close()


def test_bundled_ssd_is_corals_file(models_dir: Path) -> None:
    """model.json and the file agree with the SHA-256 Coral's model has."""
    model = ModelRepository(models_dir).load(SSD)
    assert model.manifest.sha256 == CORAL_SHA256 == sha256_of(model.model_path)


def test_ssd_runs_on_litert_whatever_the_configured_cpu_backend(ssd) -> None:
    """A .tflite model selects the tflite engine; describe() says so."""
    assert ssd.backend == "tflite"
    assert ssd.engine.describe()["backend"] == "tflite"


def test_ssd_finds_dog_bicycle_and_car_in_dog_jpg(ssd, media) -> None:
    """darknet's dog.jpg: the dog bottom left, the bicycle across the middle, the car top right."""
    image = media.image("dog.jpg")
    height, width = image.shape[:2]
    result = ssd.run(image)
    found = {p.label: p for p in result.predictions}
    assert {"dog", "bicycle", "car"} <= set(found), result.predictions
    assert all(p.confidence >= 0.4 for p in result.predictions)
    dog, car, bicycle = found["dog"].box, found["car"].box, found["bicycle"].box
    assert dog[0] < width / 2 and dog[3] > height / 2  # left half, reaching the bottom half
    assert car[0] > width / 2 and car[3] < height / 2  # right half, top half
    assert bicycle[2] - bicycle[0] > width / 2  # spans most of the width
    assert all(0 <= v <= max(width, height) for p in result.predictions for v in p.box)


@pytest.mark.parametrize(("photo", "label"), [("chelsea.png", "cat"), ("coffee.png", "cup")])
def test_ssd_names_what_the_photo_shows(ssd, media, photo: str, label: str) -> None:
    """scikit-image's chelsea is a cat; coffee is a cup: the top prediction."""
    result = ssd.run(media.image(photo))
    assert result.predictions and result.predictions[0].label == label, result.predictions


def test_ssd_result_is_the_detection_result_the_solution_uses(ssd, media) -> None:
    """The same DetectionResult (to_dict with label, confidence, box) as the ONNX detector's."""
    record = ssd.run(media.image("dog.jpg")).to_dict()
    assert record["task"] == "detection" and record["model"] == f"{SSD}:1"
    assert {"label", "confidence", "box"} <= set(record["predictions"][0])


def test_model_name_selects_the_tflite_model(models_dir: Path, media) -> None:
    """MODEL_NAME (module settings) builds the TFLite model with the module's threads."""
    settings = VisionSettings(
        camera_path=str(media.path("dog.jpg")), model_name=SSD, model_repository=models_dir, intra_op_threads=1
    )
    task = build_task_from_settings(settings)
    try:
        assert task.backend == "tflite" and task.engine.config.intra_op_threads == 1
        assert "dog" in {p.label for p in task.run(media.image("dog.jpg")).predictions}
    finally:
        task.engine.close()


def test_use_tensor_rt_with_a_tflite_model_is_a_clear_error(models_dir: Path) -> None:
    """TensorRT runs ONNX only: the error names the model and the setting to change."""
    model = ModelRepository(models_dir).load(SSD)
    with pytest.raises(EngineUnavailableError, match="USE_TENSOR_RT=False"):
        backend_for_model(model, "tensorrt")
    assert backend_for_model(ModelRepository(models_dir).load("nanodet-m-416"), "tensorrt") == "tensorrt"


def test_model_manager_swaps_onnx_to_tflite_to_onnx(models_dir: Path, media) -> None:
    """The manager builds, warms up and validates models of both runtimes and swaps between them."""
    repository = ModelRepository(models_dir)
    manager = ModelManager("onnxruntime", threads=1, sample_image=media.path("dog.jpg"))
    try:
        for name, backend in (("nanodet-m-416", "onnxruntime"), (SSD, "tflite"), ("nanodet-m-416", "onnxruntime")):
            served = manager.activate(repository.load(name))
            assert served.task.backend == backend
            with manager.acquire() as current:
                inputs, geometry = current.pre_process(media.image("dog.jpg"))
                labels = {p.label for p in current.infer(inputs, geometry).predictions}
            assert {"dog", "bicycle"} <= labels, (name, labels)
    finally:
        manager.close()


# -- labels -------------------------------------------------------------------------------------------------


def test_labelmap_with_question_marks_drops_the_background_line() -> None:
    """The Zoo's labelmap.txt: `???` first (background), class 0 is the next line; later `???` are gaps."""
    labels = parse_labels("???\nperson\nbicycle\n???\ncar\n")
    assert labels == ("person", "bicycle", "???", "car")


def test_coco_labels_with_ids_keep_the_gaps() -> None:
    """Coral's coco_labels.txt: `<id>  <name>`, ids with gaps (11 is missing): ids index the tuple."""
    labels = parse_labels("0  person\n1  bicycle\n10  fire hydrant\n12  stop sign\n")
    assert labels[0] == "person" and labels[10] == "fire hydrant" and labels[12] == "stop sign"
    assert labels[11] == "???" and len(labels) == 13


def test_plain_labels_stay_as_they_are() -> None:
    """The repository's labels.txt: one name per line, numbers inside names are kept."""
    assert parse_labels("tench\n7 up\ngoldfish\n") == ("tench", "7 up", "goldfish")


def test_bundled_coco_labels_name_the_ids_the_ssd_returns(models_dir: Path) -> None:
    """Class id 0 is person, 2 car, 17 dog (COCO's ids); the gap at 11 is unnamed."""
    model = ModelRepository(models_dir).load(SSD)
    assert (model.labels[0], model.labels[2], model.labels[17], model.labels[11]) == ("person", "car", "dog", "???")


# -- outputs by name or shape, never by position -------------------------------------------------------------


def _zoo_outputs() -> dict[str, np.ndarray]:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.9]]], np.float32)
    return {
        "boxes": boxes,
        "classes": np.array([[17.0, 1.0]], np.float32),
        "scores": np.array([[0.9, 0.55]], np.float32),
        "count": np.array([2.0], np.float32),
    }


@pytest.mark.parametrize(
    "names",
    [
        # TF2 exports list their outputs out of order, under StatefulPartitionedCall names
        {"count": "StatefulPartitionedCall:0", "scores": "StatefulPartitionedCall:1", "classes": "x:3", "boxes": "y"},
        {"boxes": "detection_boxes", "classes": "detection_classes", "scores": "detection_scores", "count": "n"},
        {
            "scores": "TFLite_Detection_PostProcess:2",
            "boxes": "TFLite_Detection_PostProcess",
            "count": "TFLite_Detection_PostProcess:3",
            "classes": "TFLite_Detection_PostProcess:1",
        },
    ],
    ids=["shape-and-values", "words", "operator-suffixes"],
)
def test_zoo_outputs_are_found_in_any_order(names: dict[str, str]) -> None:
    """Each naming, with the outputs in a shuffled order, maps every role to the right array."""
    arrays = _zoo_outputs()
    named = {names[role]: arrays[role] for role in ("count", "scores", "classes", "boxes")}
    found = map_zoo_outputs(dict(reversed(list(named.items()))), {})
    for role, array in arrays.items():
        assert found[role] is array, role


def test_zoo_outputs_that_cannot_be_told_apart_are_a_clear_error() -> None:
    """Classes and scores both whole numbers under meaningless names: name them in model.json."""
    arrays = _zoo_outputs()
    arrays["scores"] = np.array([[1.0, 0.0]], np.float32)
    with pytest.raises(EngineError, match="name them in model.json"):
        map_zoo_outputs({"a": arrays["boxes"], "b": arrays["classes"], "c": arrays["scores"]}, {})
    found = map_zoo_outputs({"a": arrays["boxes"], "b": arrays["classes"], "c": arrays["scores"]}, {"scores": "c"})
    assert found["scores"] is arrays["scores"] and found["classes"] is arrays["classes"]


def test_zoo_manifest_needs_four_outputs_and_known_names(tmp_path: Path, models_dir: Path) -> None:
    """A Zoo manifest naming an output it does not list, or listing 3 outputs, is a ManifestError."""
    source = models_dir / SSD / "1"
    folder = tmp_path / SSD / "1"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    manifest["postprocess"]["scores"] = "no_such_output"
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ManifestError, match="no_such_output"):
        ModelRepository(tmp_path).load(SSD)
    manifest["postprocess"]["scores"] = manifest["outputs"][2]
    manifest["outputs"] = manifest["outputs"][:3]
    manifest["postprocess"].pop("count")
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ManifestError, match="4 outputs"):
        ModelRepository(tmp_path).load(SSD)


# -- a TFLite classifier --------------------------------------------------------------------------------------


def test_a_tflite_classifier_runs_through_the_classification_head(tmp_path: Path, media) -> None:
    """A classification .tflite (NHWC, softmax output) gives top-k labels like the ONNX classifier: the tiny
    model scores each colour channel's mean, so a photo's dominant channel wins."""
    from solution_testkit import tflite_models  # pylint: disable=import-outside-toplevel

    folder = tmp_path / "colours" / "1"
    folder.mkdir(parents=True)
    model_file = tflite_models.classifier_model(folder / "model.tflite", side=8)
    (folder / "labels.txt").write_text("blue\ngreen\nred\n", encoding="utf-8")
    manifest = {
        "name": "colours",
        "version": "1",
        "task": "classification",
        "file": "model.tflite",
        "sha256": sha256_of(model_file),
        "license": "MIT",
        "labels": "labels.txt",
        "input": {"name": "image", "shape": [1, 8, 8, 3], "dtype": "float32"},
        "outputs": ["probabilities"],
        "preprocess": {
            "color": "BGR",
            "resize": {"mode": "stretch", "width": 8, "height": 8},
            "mean": [0, 0, 0],
            "std": [255, 255, 255],
            "layout": "NHWC",
        },
        "postprocess": {"softmax": False, "top_k": 3},
    }
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    manager = ModelManager("onnxruntime", threads=1, sample_image=media.path("chelsea.png"))
    try:
        served = manager.activate(ModelRepository(tmp_path).load("colours"))
        image = media.image("chelsea.png")
        result = served.task.run(image)
        dominant = ("blue", "green", "red")[int(np.argmax(image.reshape(-1, 3).mean(axis=0)))]
        assert result.predictions[0].label == dominant
        assert abs(sum(p.confidence for p in result.predictions) - 1.0) < 1e-4
    finally:
        manager.close()


# -- one model, two runtimes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["dog.jpg", "chelsea.png", "coffee.png"])
def test_nanodet_tflite_matches_nanodet_onnx(models_dir: Path, media, photo: str) -> None:  # pylint: disable=too-many-locals
    """The NanoDet conversion on LiteRT gives ONNX Runtime's outputs (< 1e-4) and the same detections."""
    repository = ModelRepository(models_dir)
    onnx_task = build_task(repository.load("nanodet-m-416"), "onnxruntime", threads=1)
    tflite_task = build_task(repository.load("nanodet-m-416-tflite"), "onnxruntime", threads=1)
    try:
        assert (onnx_task.backend, tflite_task.backend) == ("onnxruntime", "tflite")
        image = media.image(photo)
        onnx_inputs, geometry = onnx_task.pre_process(image)
        tflite_inputs, _ = tflite_task.pre_process(image)
        onnx_out = dict(zip(onnx_task.manifest.outputs, onnx_task.engine.infer(onnx_inputs)))
        tflite_out = dict(zip(tflite_task.manifest.outputs, tflite_task.engine.infer(tflite_inputs)))
        for onnx_head, tflite_head in zip(onnx_task.manifest.post.heads, tflite_task.manifest.post.heads):
            assert onnx_head.stride == tflite_head.stride
            for role in ("scores", "boxes"):
                np.testing.assert_allclose(
                    tflite_out[getattr(tflite_head, role)], onnx_out[getattr(onnx_head, role)], atol=1e-4
                )
        onnx_result = onnx_task.infer(onnx_inputs, geometry)
        tflite_result = tflite_task.infer(tflite_inputs, geometry)
        assert [p.label for p in tflite_result.predictions] == [p.label for p in onnx_result.predictions]
        if photo == "dog.jpg":
            assert {"dog", "bicycle"} <= {p.label for p in onnx_result.predictions}
        for a, b in zip(tflite_result.predictions, onnx_result.predictions):
            assert abs(a.confidence - b.confidence) < 1e-3
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
    finally:
        onnx_task.engine.close()
        tflite_task.engine.close()


# -- packages without model.json ------------------------------------------------------------------------------


def zoo_labelmap(models_dir: Path) -> str:
    """Coral's coco_labels.txt in the Detection Zoo's labelmap.txt format: `???` first, `???` in the gaps."""
    labels = ModelRepository(models_dir).load(SSD).labels
    return "\n".join(("???",) + labels) + "\n"


def seed_example_folder(root: Path, models_dir: Path, labels: bool = True) -> Path:
    """The seed's example package contents: `ssd_mobilenet_v1_1_metadata_1.tflite` + `labelmap.txt` (the file is
    the bundled Coral SSD MobileNet V2 under that name)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(models_dir / SSD / "1" / "model.tflite", root / "ssd_mobilenet_v1_1_metadata_1.tflite")
    if labels:
        (root / "labelmap.txt").write_text(zoo_labelmap(models_dir), encoding="utf-8")
    return root


def test_a_tflite_package_without_model_json_is_described_validated_and_runs(
    tmp_path: Path, models_dir: Path, media
) -> None:
    """find_model_folder writes model.json from the model's signature; it validates, installs and finds the dog."""
    from edgevision.models.package import find_model_folder, install, validate  # pylint: disable=C0415

    unpacked = seed_example_folder(tmp_path / "unpacked" / "model", models_dir)
    folder = find_model_folder(tmp_path / "unpacked")
    model = validate(folder)
    assert model.manifest.name == "ssd-mobilenet-v1-1-metadata-1"
    assert model.manifest.version == CORAL_SHA256[:12] and model.manifest.input.dtype == "uint8"
    assert model.labels[0] == "person" and folder == unpacked
    installed = install(model, tmp_path / "store")
    task = build_task(installed.model, "onnxruntime", threads=1)
    try:
        labels = {p.label for p in task.run(media.image("dog.jpg")).predictions}
    finally:
        task.engine.close()
    assert {"dog", "bicycle", "car"} <= labels


def test_labels_embedded_in_the_tflite_metadata_are_used(tmp_path: Path, models_dir: Path) -> None:
    """A .tflite with metadata is also a zip holding its labels: a package with the model alone works."""
    from edgevision.models.package import find_model_folder, validate  # pylint: disable=C0415

    folder = seed_example_folder(tmp_path / "p", models_dir, labels=False)
    model_file = folder / "ssd_mobilenet_v1_1_metadata_1.tflite"
    appended = io.BytesIO()
    with zipfile.ZipFile(appended, "w") as metadata:
        metadata.writestr("labelmap.txt", zoo_labelmap(models_dir))
    model_file.write_bytes(model_file.read_bytes() + appended.getvalue())
    model = validate(find_model_folder(folder))
    assert model.manifest.labels == "labels.txt" and model.labels[17] == "dog"


def test_tflite_packages_without_model_json_that_cannot_be_described_are_refused(tmp_path: Path) -> None:
    """A classifier .tflite, two models, or no labels: PackageError at `validating` saying what is missing."""
    from solution_testkit import tflite_models  # pylint: disable=import-outside-toplevel

    from edgevision.models.package import PackageError, find_model_folder  # pylint: disable=C0415

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    tflite_models.classifier_model(classifier / "colours.tflite")
    (classifier / "labels.txt").write_text("blue\ngreen\nred\n", encoding="utf-8")
    with pytest.raises(PackageError, match="not the Detection Zoo signature.*add a model.json") as caught:
        find_model_folder(classifier)
    assert caught.value.step == "validating"
    tflite_models.classifier_model(classifier / "second.tflite")
    with pytest.raises(PackageError, match="expected one .tflite model, found 2"):
        find_model_folder(classifier)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(PackageError, match="not a usable TensorFlow Lite model"):
        find_model_folder(corrupt)
