#!/usr/bin/env python3
"""Checks the bundled models on the bundled media with a plain reading of each model.json.

- efficientnet-lite0: chelsea.png has a cat class in its top 3, coffee.png has espresso or cup on top;
  squirrel_cls.jpg is printed for information.
- nanodet-m-416: frames of vtest.avi each have at least one person; dog.jpg is printed for information.
- ppocr-det: imageTextN.png has text boxes, a blank image has none.

Run after the build scripts: `python3 tools/models/check_models.py` (uses this Python's cv2, numpy and
onnxruntime, or a small venv with them). Prints a JSON report; exits non-zero when a check fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}
COFFEE_CLASSES = {"espresso", "cup"}
VTEST_FRAMES = (0, 100, 200, 300, 400, 500, 600, 700)


def run_checks() -> tuple[dict, list[str]]:
    """Runs every check; returns the report and the failures."""
    # pylint: disable=too-many-locals
    # pylint: disable=import-outside-toplevel
    import cv2
    import numpy as np
    import reference

    media = common.MEDIA_DIR
    report: dict = {}
    failures: list[str] = []

    classifier = reference.BundledModel(common.MODELS_DIR / "efficientnet-lite0" / "1")
    for name in ("chelsea.png", "coffee.png", "squirrel_cls.jpg"):
        top3 = reference.classify(classifier, cv2.imread(str(media / name)), top_k=3)
        report[f"efficientnet-lite0 {name}"] = [[label, round(p, 4)] for label, p in top3]
        labels = [label for label, _ in top3]
        if name == "chelsea.png" and not CAT_CLASSES & set(labels):
            failures.append(f"chelsea: no cat class in top 3 {top3}")
        if name == "coffee.png" and labels[0] not in COFFEE_CLASSES:
            failures.append(f"coffee: top 1 is {labels[0]}")

    detector = reference.BundledModel(common.MODELS_DIR / "nanodet-m-416" / "1")
    capture = cv2.VideoCapture(str(media / "vtest.avi"))
    persons = {}
    for index in VTEST_FRAMES:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            failures.append(f"vtest.avi: cannot read frame {index}")
            continue
        found = reference.detect_nanodet(detector, frame)
        persons[index] = sum(d.label == "person" for d in found)
        if persons[index] == 0:
            failures.append(f"vtest.avi frame {index}: no person ({found})")
    capture.release()
    report["nanodet-m-416 vtest.avi persons per frame"] = persons
    report["nanodet-m-416 dog.jpg"] = [
        [d.label, round(d.score, 3), [round(v) for v in d.box]]
        for d in reference.detect_nanodet(detector, cv2.imread(str(media / "dog.jpg")))
    ]

    text = reference.BundledModel(common.MODELS_DIR / "ppocr-det" / "1")
    boxes = reference.text_boxes(text, cv2.imread(str(media / "imageTextN.png")))
    blank = reference.text_boxes(text, np.full((480, 640, 3), 255, np.uint8))
    report["ppocr-det imageTextN.png boxes"] = boxes
    report["ppocr-det blank boxes"] = blank
    if boxes == 0 or blank != 0:
        failures.append(f"ppocr-det: {boxes} boxes on imageTextN.png, {blank} on a blank image")
    return report, failures


def main() -> int:
    """Runs the checks, prints the report; 1 when a check failed."""
    common.ensure_runtime_modules()
    report, failures = run_checks()
    print(json.dumps(report, indent=2))
    for failure in failures:
        common.log(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
