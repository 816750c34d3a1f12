"""A model package without model.json: one TensorFlow Lite detection model (`*.tflite`) and its labels, as the
Detection Zoo, Coral and Model Maker hand them out (e.g. `ssd_mobilenet_v1_1_metadata_1.tflite` + `labelmap.txt`).

The manifest is written from the model itself: its one image input (NHWC, uint8 or float32) and the four outputs
of `TFLite_Detection_PostProcess` (boxes [1,N,4], classes, scores, count). Labels come from `labelmap.txt`,
`coco_labels.txt` or `labels.txt` next to it, else from the model's metadata (a TFLite file with metadata is also
a zip holding its label file). The version is the first 12 hex digits of the model's SHA-256: the same file is
the same version, another file another version. Anything else needs a model.json in the package."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from edgevision.files import sha256_of
from edgevision.models.errors import ModelError

LABEL_FILES = ("labelmap.txt", "coco_labels.txt", "labels.txt")
# Float Zoo models take (x - 127.5) / 127.5; uint8 models take the pixels as they are.
FLOAT_MEAN_STD = 127.5


class TFLitePackageError(ModelError):
    """The package's .tflite model cannot be described without a model.json."""


def _signature(model: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise TFLitePackageError(
            "a .tflite package needs LiteRT (the 'ai-edge-litert' package, pip install 'edgevision[tflite]'), "
            "which is not installed in this module"
        ) from e
    try:
        interpreter = Interpreter(model_path=str(model))
        interpreter.allocate_tensors()  # output shapes are known after allocation
    except (RuntimeError, ValueError) as e:
        raise TFLitePackageError(f"{model.name} is not a usable TensorFlow Lite model: {e}") from e
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1:
        raise TFLitePackageError(f"{model.name} has {len(inputs)} inputs; an image model has one")
    return inputs[0], outputs


def _labels_file(folder: Path, model: Path) -> str:
    """The labels file's name in `folder`; extracted from the model's metadata when the package has none."""
    for name in LABEL_FILES:
        if (folder / name).is_file():
            return name
    if zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as metadata:
            texts = [n for n in metadata.namelist() if n.endswith(".txt") and "/" not in n]
            if texts:
                (folder / "labels.txt").write_bytes(metadata.read(texts[0]))
                return "labels.txt"
    raise TFLitePackageError(f"the package holds no {', '.join(LABEL_FILES)} and {model.name} embeds no labels")


def describe_tflite_package(folder: Path) -> Path:
    """Write `folder/model.json` for the one .tflite detection model in `folder`; returns its path."""
    models = sorted(folder.glob("*.tflite"))
    if len(models) != 1:
        raise TFLitePackageError(f"expected one .tflite model, found {len(models)}")
    model = models[0]
    image, outputs = _signature(model)
    shape = [int(d) for d in image["shape"]]
    dtype = image["dtype"].__name__
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or dtype not in ("uint8", "float32"):
        raise TFLitePackageError(
            f"{model.name} takes {dtype} {shape}; without a model.json only a [1, H, W, 3] uint8 or float32 image "
            "input is understood"
        )
    output_shapes = [[int(d) for d in o["shape"]] for o in outputs]
    if len(outputs) != 4 or not any(len(s) == 3 and s[-1] == 4 for s in output_shapes):
        raise TFLitePackageError(
            f"{model.name} has outputs {output_shapes}, not the Detection Zoo signature (boxes [1, N, 4], classes, "
            "scores, count); add a model.json describing it"
        )
    stem = re.sub(r"[^a-z0-9]+", "-", model.stem.lower()).strip("-") or "tflite-model"
    sha256 = sha256_of(model)
    norm = 0.0 if dtype == "uint8" else FLOAT_MEAN_STD
    scale = 1.0 if dtype == "uint8" else FLOAT_MEAN_STD
    manifest = {
        "name": stem,
        "version": sha256[:12],
        "task": "detection",
        "file": model.name,
        "sha256": sha256,
        "license": "not stated (a package without model.json)",
        "source": f"over-the-air package without model.json; manifest written from {model.name}'s signature",
        "labels": _labels_file(folder, model),
        "input": {"name": image["name"], "shape": shape, "dtype": dtype},
        "outputs": [o["name"] for o in outputs],
        "preprocess": {
            "color": "RGB",
            "resize": {"mode": "stretch", "width": shape[2], "height": shape[1]},
            "mean": [norm] * 3,
            "std": [scale] * 3,
            "layout": "NHWC",
        },
        "postprocess": {"decoder": "tflite_detection_postprocess"},
    }
    path = folder / "model.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
