"""The pipeline's building blocks on their own: the newest-value holder, the bounded hand-off, the consumers'
lifecycle and the frame's wall-clock time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from edgevision.frames import Frame
from edgevision.pipeline import BaseConsumer, Fanout, Handoff, LatestValue
from edgevision.tasks.results import TaskResult


def test_latest_value_take_gets_only_the_newest_and_counts_replacements() -> None:
    slot: LatestValue[int] = LatestValue()
    assert slot.take(timeout=0.01) is None
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken
    assert slot.take(timeout=0.01) == 2
    assert slot.take(timeout=0.01) is None  # taken once only
    assert slot.put(3) is False
    assert slot.seq == 3


def test_latest_value_take_waits_for_a_put_from_another_thread() -> None:
    slot: LatestValue[str] = LatestValue()
    threading.Timer(0.05, slot.put, args=("late",)).start()
    assert slot.take(timeout=5) == "late"


def test_latest_value_readers_see_each_new_value_without_taking_it() -> None:
    slot: LatestValue[str] = LatestValue()
    assert slot.peek() == (0, None)
    assert slot.wait_newer(0, timeout=0.01) == (0, None)
    slot.put("a")
    seq, value = slot.wait_newer(0, timeout=0.01)
    assert (seq, value) == (1, "a")
    assert slot.wait_newer(seq, timeout=0.01) == (seq, None)  # nothing newer yet
    assert slot.take(timeout=0.01) == "a"  # readers did not take it
    threading.Timer(0.05, slot.put, args=("b",)).start()
    assert slot.wait_newer(seq, timeout=5) == (2, "b")


def test_handoff_drops_the_oldest_and_counts() -> None:
    handoff: Handoff[int] = Handoff(2)
    for item in range(5):
        handoff.offer(item)
    assert handoff.dropped == 3
    assert [handoff.get(timeout=0.01), handoff.get(timeout=0.01)] == [3, 4]


def test_handoff_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        Handoff(0)


class Recorder(BaseConsumer):
    """Logs its lifecycle and the frames it handles; can fail to start."""

    def __init__(self, name: str, log: list[str], fail_start: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    def handle(self, frame: Frame, result: TaskResult) -> None:
        self.log.append(f"{self.name} {frame.index}")

    def close(self) -> None:
        self.log.append(f"close {self.name}")


def _frame(index: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), index, time.monotonic(), "test")


def _result() -> TaskResult:
    return TaskResult(task="classification", model="m:1", predictions=(), image_size=(2, 2))


def test_fanout_starts_delivers_in_order_then_closes() -> None:
    log: list[str] = []
    fanout = Fanout([Recorder("a", log), Recorder("b", log)], queue_size=8)
    fanout.start()
    for index in range(3):
        fanout.publish(_frame(index), _result())
    fanout.close()
    assert log[:2] == ["start a", "start b"]
    assert [entry for entry in log if entry.startswith("a ")] == ["a 0", "a 1", "a 2"]
    assert [entry for entry in log if entry.startswith("b ")] == ["b 0", "b 1", "b 2"]
    # Each consumer closes after its own last frame; the two run on their own threads, so a may close while b
    # still works through its queue.
    assert log.count("close a") == log.count("close b") == 1
    assert log.index("close a") > log.index("a 2") and log.index("close b") > log.index("b 2")
    assert log[-1].startswith("close ")
    assert fanout.stats() == {"a": {"dropped": 0, "failures": 0}, "b": {"dropped": 0, "failures": 0}}


def test_fanout_closes_the_started_consumers_when_one_fails_to_start() -> None:
    log: list[str] = []
    fanout = Fanout([Recorder("a", log), Recorder("b", log, fail_start=True)])
    with pytest.raises(RuntimeError, match="b cannot start"):
        fanout.start()
    assert log == ["start a", "close a"]


@pytest.mark.parametrize(
    ("consumers", "error", "message"),
    [
        ([lambda frame, result: None], TypeError, "is not a Consumer"),
        ([Recorder("same", []), Recorder("same", [])], ValueError, "names must be unique"),
    ],
)
def test_fanout_refuses_bad_consumers(consumers: list, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Fanout(consumers)


def test_frame_carries_wall_clock_capture_time() -> None:
    before = time.time()
    frame = _frame(0)
    assert before <= frame.captured_at <= time.time()
    fixed = Frame(np.zeros((1, 1, 3), np.uint8), 0, 0.0, "t", captured_at=1764623392.5)
    assert fixed.captured_at_iso == "2025-12-01T21:09:52.500Z"
    parsed = datetime.strptime(frame.captured_at_iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(parsed.timestamp() - frame.captured_at) < 0.001
