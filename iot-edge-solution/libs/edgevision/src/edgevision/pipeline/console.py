"""The console of a running pipeline: by default a status line every few seconds (fps, latency, frames, the
source's state and what the caller adds, e.g. requests served); with `every_frame` a line per result (a trace for
debugging, or a single module watched in a terminal). A long-running module speaks in events and status lines:
a line per frame at 25-100 fps buries everything else."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from edgevision.frames import Frame
from edgevision.pipeline.fanout import BaseConsumer
from edgevision.pipeline.stats import PipelineStats
from edgevision.tasks.results import TaskResult


class ConsoleReporter(BaseConsumer):
    """Per result (`every_frame`): `frame N | label confidence | +k more | fps | inference ms`. Otherwise, every
    `interval_s` on a thread of its own (so a stalled camera still gets its line): `status | fps | inference ms |
    frames | <extras> | camera ...`, where the camera is `live` while results come and `no frames for N s` when
    they stop."""

    name = "console"

    def __init__(  # pylint: disable=too-many-arguments
        self,
        stats: PipelineStats,
        stream: TextIO | None = None,
        *,
        every_frame: bool = True,
        interval_s: float = 30.0,
        extras: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.stats = stats
        self.stream = stream or sys.stdout
        self.every_frame = every_frame
        self.interval_s = interval_s
        self.extras = extras
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = {"results": 0, "inference_ms": 0.0, "inference_n": 0}
        self._latest: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the status thread (not with `every_frame`: each line already says it all)."""
        if not self.every_frame and self._thread is None:
            self._thread = threading.Thread(target=self._status_loop, name="console-status", daemon=True)
            self._thread.start()

    def handle(self, frame: Frame, result: TaskResult) -> None:
        top = result.top
        shown = f"{top.label} {top.confidence:.2f}" if top else "nothing"
        more = len(result.predictions) - 1 if result.task != "classification" and top else 0
        extra = f" (+{more} more)" if more > 0 else ""
        if not self.every_frame:
            with self._lock:
                self._latest = (frame.index, f"{result.task}: {shown}{extra}")
            return
        self.stream.write(
            f"frame {frame.index:6d} | {result.task}: {shown}{extra} | {self.stats.fps:6.1f} fps | "
            f"inference {result.inference_ms:5.1f} ms\n"
        )
        self.stream.flush()

    def status_line(self) -> str:
        """One status line: since the previous one, the results per second and the mean inference time; the
        frames so far; the latest result; the caller's extras; the source's state."""
        snap = self.stats.snapshot()
        results = int(snap["results"])
        count = self.stats.count("inference")
        total_ms = self.stats.total_ms("inference")
        new_results = results - int(self._last["results"])
        new_n = count - int(self._last["inference_n"])
        mean_ms = (total_ms - float(self._last["inference_ms"])) / new_n if new_n > 0 else 0.0
        self._last = {"results": results, "inference_ms": total_ms, "inference_n": count}
        now = self.clock()
        last = self.stats.last_result_at
        if last is None:
            camera = "camera: waiting for the first frame"
        elif now - last > max(2.0, self.interval_s / 2):
            camera = f"camera: no frames for {now - last:.0f} s"
        else:
            camera = "camera: live"
        with self._lock:
            latest = self._latest
        parts = [
            f"status | {self.stats.fps:5.1f} fps | inference {mean_ms:5.1f} ms",
            f"{results} frames (+{new_results})",
        ]
        if latest is not None:
            parts.append(f"latest {latest[1]}")
        if self.extras is not None:
            extra = self.extras()
            if extra:
                parts.append(extra)
        parts.append(camera)
        return " | ".join(parts)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.stream.write(self.status_line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the status thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


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
