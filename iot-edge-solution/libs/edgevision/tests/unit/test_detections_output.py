"""The `detections` output: message shape, only changed results, the confidence floor, the rate limit, the repeat
of lasting results, and staying off without edgeHub."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest

from edgevision.config import SettingsError, load_settings
from edgevision.detections import DetectionsOutput, DetectionsSettings, detections_message, split_model_ref
from edgevision.frames import Frame
from edgevision.iot import OfflineModuleConnection
from edgevision.tasks.results import DetectionResult, Prediction

IMAGE = np.zeros((4, 4, 3), np.uint8)


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class OnlineOffline(OfflineModuleConnection):
    """The offline connection, flagged online so the output's decisions run (nothing is sent in these tests)."""

    enabled = True


def frame(index: int) -> Frame:
    """A frame with a fixed capture time."""
    return Frame(IMAGE, index, 0.0, "test", captured_at=1764622800.25)


def result(*predictions: tuple[str, float, float]) -> DetectionResult:
    """A detection result with (label, confidence, box x) predictions."""
    return DetectionResult(
        task="detection",
        model="nanodet-m-416:1",
        predictions=tuple(Prediction(label, conf, box=(x, 10.0, x + 50.0, 60.0)) for label, conf, x in predictions),
        image_size=(768, 576),
    )


def output(clock: Clock, **settings: float) -> DetectionsOutput:
    """A detections output with a hand-driven clock."""
    values = {
        "detections_max_per_second": 5,
        "detections_min_confidence": 0.3,
        "detections_repeat_seconds": 0,
        **settings,
    }
    return DetectionsOutput(OnlineOffline(), load_settings(DetectionsSettings, **values), clock=clock)


def test_message_holds_model_version_frame_time_and_results_above_the_floor() -> None:
    body = detections_message(frame(12), result(("dog", 0.42, 5), ("bicycle", 0.71, 100), ("cat", 0.2, 0)), 0.3)
    assert body["model"] == "nanodet-m-416" and body["modelVersion"] == "1" and body["task"] == "detection"
    assert body["frameIndex"] == 12 and body["frameTime"] == "2025-12-01T21:00:00.250Z"
    assert body["imageSize"] == [768, 576]
    assert body["detections"] == [
        {"label": "bicycle", "confidence": 0.71, "box": [100.0, 10.0, 150.0, 60.0]},
        {"label": "dog", "confidence": 0.42, "box": [5.0, 10.0, 55.0, 60.0]},
    ]


@pytest.mark.parametrize("ref, expected", [("a:1", ("a", "1")), ("a:b:2", ("a:b", "2")), ("plain", ("plain", None))])
def test_split_model_ref(ref: str, expected: tuple) -> None:
    assert split_model_ref(ref) == expected


def test_only_changed_results_are_sent() -> None:
    clock = Clock()
    out = output(clock)
    sent = []
    for index, res in enumerate(
        [
            result(("dog", 0.5, 5)),
            result(("dog", 0.5, 5)),
            result(("dog", 0.501, 5.2)),
            result(("dog", 0.5, 9)),
            result(),
            result(),
            result(("cat", 0.1, 0)),
        ]
    ):
        clock.now += 1
        sent.append(out.decide(frame(index), res) is not None)
    # same; within rounding; moved box; empty once; empty again; below the floor = empty again
    assert sent == [True, False, False, True, True, False, False]
    assert out.stats()["unchanged"] == 4


def test_rate_limit_skips_changes_but_sends_the_newest_once_allowed() -> None:
    clock = Clock()
    out = output(clock, detections_max_per_second=2)
    decided = []
    for index in range(6):
        decided.append(out.decide(frame(index), result(("dog", 0.5, float(index * 10)))))
        clock.now += 0.2
    assert [m["frameIndex"] for m in decided if m] == [0, 3]  # 0.6 s after frame 0: the first at >= 0.5 s
    assert out.stats()["rate_limited"] == 4


def test_unchanged_results_are_repeated_after_the_repeat_interval_empty_ones_never() -> None:
    clock = Clock()
    out = output(clock, detections_repeat_seconds=5)
    assert out.decide(frame(0), result(("dog", 0.5, 5))) is not None
    clock.now += 4.9
    assert out.decide(frame(1), result(("dog", 0.5, 5))) is None
    clock.now += 0.1
    assert out.decide(frame(2), result(("dog", 0.5, 5)))["frameIndex"] == 2
    assert out.decide(frame(3), result()) is None  # a change, but over the rate (5 a second)
    clock.now += 1
    assert out.decide(frame(4), result()) is not None
    clock.now += 60
    assert out.decide(frame(5), result()) is None


def test_off_without_edgehub_or_at_zero_rate() -> None:
    offline = DetectionsOutput(OfflineModuleConnection("test"), load_settings(DetectionsSettings))
    assert not offline.enabled
    offline.start()
    offline.handle(frame(0), result(("dog", 0.9, 1)))
    offline.close()
    assert offline.stats()["frames"] == 0
    zero = DetectionsOutput(OnlineOffline(), load_settings(DetectionsSettings, detections_max_per_second=0))
    assert not zero.enabled


def test_sender_counts_sends_and_drops_when_edgehub_does_not_keep_up() -> None:
    clock = Clock()
    out = DetectionsOutput(OnlineOffline(), load_settings(DetectionsSettings, detections_queue_size=2), clock=clock)
    for index in range(5):  # not started: nothing drains the queue, like an edgeHub that does not answer
        clock.now += 1
        out.handle(frame(index), result(("dog", 0.5, float(index * 10))))
    assert out.stats()["dropped"] == 3 and out.stats()["queued"] == 2
    out.start()
    out.close()
    assert out.stats()["sent"] == 2  # the offline connection takes them without a hub


@pytest.mark.parametrize(
    "env, error",
    [
        ({"DETECTIONS_MAX_PER_SECOND": "-1"}, "DETECTIONS_MAX_PER_SECOND='-1'"),
        ({"DETECTIONS_MIN_CONFIDENCE": "60"}, "DETECTIONS_MIN_CONFIDENCE='60'"),
        ({"DETECTIONS_QUEUE_SIZE": "0"}, "DETECTIONS_QUEUE_SIZE='0'"),
        ({"DETECTIONS_REPEAT_SECONDS": "soon"}, "DETECTIONS_REPEAT_SECONDS='soon'"),
    ],
)
def test_bad_settings_name_the_variable(env: dict, error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=error):
        load_settings(DetectionsSettings)


def test_each_message_names_its_camera_and_each_camera_is_deduplicated_on_its_own() -> None:
    clock = Clock()
    out = output(clock, detections_max_per_second=1)
    assert detections_message(frame(0), result(("dog", 0.5, 5)), 0.3)["camera"] == "default"
    door, lobby = (dataclasses.replace(frame(0), camera=name) for name in ("door", "lobby"))
    first = out.decide(door, result(("dog", 0.5, 5)))
    assert first is not None and first["camera"] == "door"
    # another camera at once: neither held back by the door's rate limit nor taken for the door's repeat
    other = out.decide(lobby, result(("dog", 0.5, 5)))
    assert other is not None and other["camera"] == "lobby"
    assert out.decide(door, result(("cat", 0.5, 5))) is None  # the door's own rate limit
    clock.now += 1.0
    assert out.decide(door, result(("dog", 0.5, 5))) is None  # unchanged for the door
    assert out.decide(lobby, result(("cat", 0.5, 5)))["camera"] == "lobby"
