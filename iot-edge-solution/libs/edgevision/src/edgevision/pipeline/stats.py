"""Pipeline statistics: frames, running FPS and per-stage latency, safe to read from any thread."""

from __future__ import annotations

import threading
import time
from collections import deque

# capture: reading (decoding) a frame; queue_wait: a pre-processed frame waiting for the inference thread;
# inference_idle: the inference thread waiting for a frame (it outran capture).
STAGES = ("capture", "preprocess", "inference", "postprocess", "end_to_end", "queue_wait", "inference_idle")


class PipelineStats:
    """Counters and latency sums; `fps` over a sliding window, `mean_fps` since the first result."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._window_s = window_s
        self._recent: deque[float] = deque()
        self._sums = dict.fromkeys(STAGES, 0.0)
        self._counts = dict.fromkeys(STAGES, 0)
        self.results = 0
        self.frames_captured = 0
        self.frames_skipped = 0
        self.errors = 0
        self.first_result_at: float | None = None
        self.last_result_at: float | None = None

    def add_latency(self, stage: str, milliseconds: float) -> None:
        """Record one measurement of `stage`."""
        with self._lock:
            self._sums[stage] += milliseconds
            self._counts[stage] += 1

    def count_capture(self, skipped: int = 0) -> None:
        """One frame captured; `skipped` older frames were replaced before inference took them."""
        with self._lock:
            self.frames_captured += 1
            self.frames_skipped += skipped

    def count_error(self) -> None:
        """One frame failed in inference or post-processing."""
        with self._lock:
            self.errors += 1

    def count_result(self, now: float | None = None) -> None:
        """One result produced."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.results += 1
            if self.first_result_at is None:
                self.first_result_at = now
            self.last_result_at = now
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self._window_s:
                self._recent.popleft()

    @property
    def fps(self) -> float:
        """Results per second over the sliding window."""
        with self._lock:
            if len(self._recent) < 2:
                return 0.0
            span = self._recent[-1] - self._recent[0]
            return (len(self._recent) - 1) / span if span > 0 else 0.0

    @property
    def mean_fps(self) -> float:
        """Results per second from the first result to the last."""
        with self._lock:
            if self.results < 2 or self.first_result_at is None or self.last_result_at is None:
                return 0.0
            span = self.last_result_at - self.first_result_at
            return (self.results - 1) / span if span > 0 else 0.0

    def mean_ms(self, stage: str) -> float:
        """Mean latency of `stage` in milliseconds (0 when not measured)."""
        with self._lock:
            count = self._counts[stage]
            return self._sums[stage] / count if count else 0.0

    def count(self, stage: str) -> int:
        """How many measurements of `stage` were recorded."""
        with self._lock:
            return self._counts[stage]

    def total_ms(self, stage: str) -> float:
        """The sum of the measurements of `stage` in milliseconds."""
        with self._lock:
            return self._sums[stage]

    def snapshot(self) -> dict[str, float | int]:
        """Everything, JSON-ready."""
        data: dict[str, float | int] = {
            "results": self.results,
            "frames_captured": self.frames_captured,
            "frames_skipped": self.frames_skipped,
            "errors": self.errors,
            "fps": round(self.fps, 2),
            "mean_fps": round(self.mean_fps, 2),
        }
        for stage in STAGES:
            data[f"{stage}_ms"] = round(self.mean_ms(stage), 3)
        return data
