"""A 1280x720 test video from real footage, reproducibly: the bundled vtest.avi (768x576 pedestrians, 795 frames
at 10 fps) scaled to 1280x720 with bicubic interpolation and written as MPEG-4 Part 2 (OpenCV's own `mp4v`
encoder, which every OpenCV build has), so decoding costs what a 720p camera file costs.

    .venv/bin/python bench/make_720p_video.py [--output .state/bench/vtest_1280x720.mp4] [--frames 400]

Prints the path. An existing file of the same frame count and size is kept (the benches call this first)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "iot-edge-solution" / "media" / "vtest.avi"
DEFAULT_OUTPUT = ROOT / ".state" / "bench" / "vtest_1280x720.mp4"
SIZE = (1280, 720)


def _matches(path: Path, frames: int) -> bool:
    capture = cv2.VideoCapture(str(path))
    try:
        return (
            capture.isOpened()
            and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
            and (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == SIZE
        )
    finally:
        capture.release()


def make_video(output: Path = DEFAULT_OUTPUT, frames: int = 400) -> Path:
    """Write (or keep) the 1280x720 video of the first `frames` frames of vtest.avi; returns its path."""
    if output.is_file() and _matches(output, frames):
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(SOURCE))
    if not capture.isOpened():
        raise SystemExit(f"cannot read {SOURCE}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    partial = output.with_suffix(".partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise SystemExit("this OpenCV cannot write mp4v video")
    written = 0
    while written < frames:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, SIZE, interpolation=cv2.INTER_CUBIC))
        written += 1
    writer.release()
    capture.release()
    if written != frames:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"{SOURCE} has only {written} frames, {frames} asked")
    partial.replace(output)
    return output


def main(argv: list[str]) -> int:
    """CLI: write the video, print its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args(argv)
    print(make_video(args.output, args.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
