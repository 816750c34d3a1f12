"""A consumer that prints one line per result: frame, top prediction, running FPS."""

from __future__ import annotations

import sys
from typing import TextIO

from edgevision.frames import Frame
from edgevision.pipeline.fanout import BaseConsumer
from edgevision.pipeline.stats import PipelineStats
from edgevision.tasks.results import TaskResult


class ConsoleReporter(BaseConsumer):
    """Prints `[camera] frame N | label confidence | +k more | fps | inference ms` for every result it gets (the
    camera's name only when CAMERAS names several)."""

    name = "console"

    def __init__(self, stats: PipelineStats, stream: TextIO | None = None) -> None:
        self.stats = stats
        self.stream = stream or sys.stdout

    def handle(self, frame: Frame, result: TaskResult) -> None:
        top = result.top
        shown = f"{top.label} {top.confidence:.2f}" if top else "nothing"
        more = len(result.predictions) - 1 if result.task != "classification" and top else 0
        extra = f" (+{more} more)" if more > 0 else ""
        camera = "" if frame.camera == "default" else f"{frame.camera} "
        self.stream.write(
            f"{camera}frame {frame.index:6d} | {result.task}: {shown}{extra} | {self.stats.fps:6.1f} fps | "
            f"inference {result.inference_ms:5.1f} ms\n"
        )
        self.stream.flush()


def format_summary(stats: PipelineStats, seconds: float) -> str:
    """A few lines for the end of a run."""
    snap = stats.snapshot()
    stages = ", ".join(
        f"{stage} {snap[f'{stage}_ms']:.2f} ms"
        for stage in ("capture", "preprocess", "inference", "postprocess", "end_to_end")
    )
    return (
        f"processed {snap['results']} frames in {seconds:.1f} s ({snap['mean_fps']:.1f} fps mean); "
        f"skipped {snap['frames_skipped']}, errors {snap['errors']}\n"
        f"mean latency per stage: {stages}"
    )


def format_cameras(status: dict[str, dict[str, object]]) -> str:
    """One status line over the cameras: `lobby up 12.5 fps | door ended | yard down (video file not found)`."""
    parts = []
    for name, camera in status.items():
        state = str(camera["state"])
        if state == "up":
            parts.append(f"{name} up {float(camera.get('fps', 0.0)):.1f} fps")  # type: ignore[arg-type]
        else:
            reason = f" ({camera['reason']})" if camera.get("reason") else ""
            parts.append(f"{name} {state}{reason}")
    return "cameras: " + " | ".join(parts)
