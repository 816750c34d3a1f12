"""Alert rules: parsing the twin's `rules` (bad documents name what is wrong), and the engine's confidence,
consecutive-frames and cooldown logic on `detections` messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from edgevision.alerts import AlertRule, AlertService, AlertSettings, RulesEngine, RulesError, parse_rules
from edgevision.alerts.service import module_identity, twin_key
from edgevision.config import SettingsError, load_settings
from edgevision.iot import InputMessage, IoTError, OfflineModuleConnection


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(*detections: tuple[str, float], frame: int = 0) -> dict[str, Any]:
    """A detections message as the classifier sends it."""
    return {
        "model": "nanodet-m-416",
        "modelVersion": "1",
        "frameIndex": frame,
        "frameTime": "2026-12-01T21:00:00.000Z",
        "detections": [{"label": label, "confidence": conf, "box": [1, 2, 3, 4]} for label, conf in detections],
    }


def rule(cls: str, conf: float = 0.6, cooldown: float = 0, frames: int = 1) -> AlertRule:
    """An AlertRule from the twin's camelCase fields."""
    return AlertRule.model_validate(
        {"class": cls, "minConfidence": conf, "cooldownSeconds": cooldown, "minConsecutiveFrames": frames}
    )


def test_parse_rules_reads_the_twin_shape_and_reports_it_back_the_same() -> None:
    document = [{"class": "person", "minConfidence": 0.6, "cooldownSeconds": 30, "minConsecutiveFrames": 3}]
    rules = parse_rules(document)
    assert rules[0].class_name == "person" and rules[0].min_consecutive_frames == 3
    assert [r.to_twin() for r in rules] == [{**document[0], "cooldownSeconds": 30.0}]


@pytest.mark.parametrize(
    "document, error",
    [
        ({"class": "person"}, "rules must be a list"),
        ("person", "rules must be a list"),
        ([42], r"rules\[0\]: must be an object"),
        ([{"minConfidence": 0.5}], r"rules\[0\]\.class: Field required"),
        ([{"class": "person", "minConfidence": 1.5}], r"rules\[0\]\.minConfidence: .*less than or equal to 1"),
        ([{"class": "person", "minConfidence": "high"}], r"rules\[0\]\.minConfidence"),
        ([{"class": "dog"}, {"class": "cat", "cooldownSeconds": -1}], r"rules\[1\]\.cooldownSeconds"),
        ([{"class": "person", "minConsecutiveFrames": 0}], r"minConsecutiveFrames: .*greater than or equal to 1"),
        ([{"class": "person", "colour": "red"}], r"rules\[0\]\.colour: Extra inputs are not permitted"),
        ([{"class": "  "}], r"rules\[0\]\.class: .*must not be blank"),
        ([{"class": "dog"}, {"class": "dog"}], "two rules for class 'dog'"),
        ([{"class": "dog"}] * 201, "at most 200 rules"),
    ],
)
def test_bad_rules_documents_are_refused_with_where_and_why(document: Any, error: str) -> None:
    with pytest.raises(RulesError, match=error):
        parse_rules(document)


def test_alert_when_a_class_reaches_its_confidence() -> None:
    engine = RulesEngine((rule("person", 0.6),))
    assert not engine.evaluate(message(("person", 0.59)))
    alerts = engine.evaluate(message(("person", 0.6), ("person", 0.8), ("dog", 0.99), frame=7))
    assert [(a.class_name, a.confidence, a.frame_index) for a in alerts] == [("person", 0.8, 7)]
    body = alerts[0].body("edge-device", "alert", now=0.0)
    assert body["class"] == "person" and body["model"] == "nanodet-m-416" and body["modelVersion"] == "1"
    assert body["device"] == "edge-device" and body["time"] == "1970-01-01T00:00:00.000Z"
    assert body["rule"]["minConfidence"] == 0.6


def test_any_class_rule_and_a_specific_rule_wins_over_it() -> None:
    engine = RulesEngine((rule("*", 0.6), rule("dog", 0.9)))
    alerts = engine.evaluate(message(("cat", 0.7), ("dog", 0.8), ("bird", 0.5)))
    assert [a.class_name for a in alerts] == ["cat"]
    assert [a.class_name for a in engine.evaluate(message(("dog", 0.95)))] == ["dog"]


def test_consecutive_frames_must_hold_the_class_without_a_gap() -> None:
    engine = RulesEngine((rule("person", 0.5, frames=3),))
    hits = [
        bool(engine.evaluate(message(("person", 0.9) if present else ("dog", 0.9))))
        for present in (True, True, False, True, True, True, True)
    ]
    # the gap at the third message restarts the count; the rule's cooldown is 0 so every further hit alerts
    assert hits == [False, False, False, False, False, True, True]
    assert engine.counts()["person"]["detections"] == 6


def test_a_frame_below_the_confidence_breaks_the_streak() -> None:
    engine = RulesEngine((rule("person", 0.6, frames=2),))
    assert not engine.evaluate(message(("person", 0.7)))
    assert not engine.evaluate(message(("person", 0.4)))
    assert not engine.evaluate(message(("person", 0.7)))
    assert len(engine.evaluate(message(("person", 0.7)))) == 1


def test_cooldown_holds_back_alerts_of_the_same_class_only() -> None:
    clock = Clock()
    engine = RulesEngine((rule("*", 0.5, cooldown=30),), clock=clock)
    assert len(engine.evaluate(message(("person", 0.9)))) == 1
    clock.now += 29.9
    assert [a.class_name for a in engine.evaluate(message(("person", 0.9), ("dog", 0.9)))] == ["dog"]
    clock.now += 0.1
    assert [a.class_name for a in engine.evaluate(message(("person", 0.9)))] == ["person"]
    counts = engine.counts()
    assert counts["person"] == {"detections": 3, "alerts": 2, "suppressedByCooldown": 1}


def test_new_rules_apply_at_once_and_restart_streaks() -> None:
    engine = RulesEngine((rule("person", 0.5, frames=2),))
    assert not engine.evaluate(message(("person", 0.9)))
    engine.set_rules((rule("person", 0.5, frames=2), rule("dog", 0.3)))
    assert not engine.evaluate(message(("person", 0.9)))  # streak restarted with the new rules
    assert [a.class_name for a in engine.evaluate(message(("person", 0.9), ("dog", 0.4)))] == ["person", "dog"]


@pytest.mark.parametrize(
    "body, error",
    [
        ([], "is a JSON object"),
        ({}, "needs a list 'detections'"),
        ({"detections": "x"}, "needs a list 'detections'"),
        ({"detections": [1]}, r"detections\[0\] is not an object"),
        ({"detections": [{"confidence": 0.5}]}, r"detections\[0\]\.label"),
        ({"detections": [{"label": "a", "confidence": 2}]}, r"detections\[0\]\.confidence"),
        ({"detections": [{"label": "a", "confidence": True}]}, r"detections\[0\]\.confidence"),
        ({"detections": [{"label": "a", "confidence": 0.5, "box": [1, 2]}]}, r"detections\[0\]\.box"),
    ],
)
def test_malformed_detections_messages_raise_value_errors(body: Any, error: str) -> None:
    engine = RulesEngine((rule("*"),))
    with pytest.raises(ValueError, match=error):
        engine.evaluate(body)


def test_settings_give_default_rules_and_name_bad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_CLASSES", "person, dog,,person")
    monkeypatch.setenv("ALERT_MIN_CONFIDENCE", "0.7")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "https://example.invalid/hook?sig=SECRET")
    settings = load_settings(AlertSettings)
    assert [r.to_twin() for r in settings.default_rules()] == [
        {"class": "person", "minConfidence": 0.7, "cooldownSeconds": 30.0, "minConsecutiveFrames": 1},
        {"class": "dog", "minConfidence": 0.7, "cooldownSeconds": 30.0, "minConsecutiveFrames": 1},
    ]
    assert "SECRET" not in repr(settings)
    monkeypatch.setenv("ALERT_MIN_CONFIDENCE", "60")
    monkeypatch.setenv("ALERT_CLASSES", " , ")
    with pytest.raises(SettingsError) as raised:
        load_settings(AlertSettings)
    assert "ALERT_MIN_CONFIDENCE='60'" in str(raised.value) and "ALERT_CLASSES" in str(raised.value)


def test_twin_rules_patches_and_invalid_patches_are_reported(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    connection = OfflineModuleConnection("test")
    service = AlertService(load_settings(AlertSettings, alert_classes="person"), connection, ("dev", "alert"))
    service.attach()
    connection.dispatch_desired({"$version": 1}, True)
    assert connection.reported["rulesSource"] == "environment"
    assert [r["class"] for r in connection.reported["rules"]] == ["person"]
    connection.dispatch_desired({"rules": [{"class": "dog", "minConfidence": 0.3}], "$version": 2}, False)
    assert connection.reported["rulesSource"] == "twin" and connection.reported["rulesError"] is None
    assert [r["class"] for r in connection.reported["rules"]] == ["dog"]
    connection.dispatch_desired({"rules": [{"class": "dog", "minConfidence": 3}], "$version": 3}, False)
    assert "rules[0].minConfidence" in connection.reported["rulesError"]
    assert [r["class"] for r in connection.reported["rules"]] == ["dog"]  # the previous rules stay
    connection.dispatch_desired({"other": 1, "$version": 4}, False)  # a patch of something else: no change
    assert "rules[0].minConfidence" in connection.reported["rulesError"]
    connection.dispatch_desired({"rules": None, "$version": 5}, False)
    assert connection.reported["rulesSource"] == "environment" and connection.reported["rulesError"] is None
    # a malformed message is a ValueError: the connection logs and counts it, the next message still comes
    connection.dispatch_input(InputMessage("detections", b"not json"))
    connection.dispatch_input(InputMessage("detections", b'{"detections": [{"label": "person", "confidence": 1}]}'))
    assert connection.counters["bad_inputs"] == 1
    assert service.stats()["alerts"] == 1 and service.stats()["bad_messages"] == 1
    assert service.reported_counts()["counts"]["person"]["alerts"] == 1


def test_module_identity_and_twin_keys() -> None:
    assert module_identity({"IOTEDGE_DEVICEID": "d", "IOTEDGE_MODULEID": "m"}) == ("d", "m")
    cs = "HostName=h;DeviceId=edge-device;ModuleId=alert;SharedAccessKey=k;GatewayHostName=localhost"
    assert module_identity({"EdgeHubConnectionString": cs}) == ("edge-device", "alert")
    assert module_identity({}) == (None, None)
    assert twin_key("traffic light") == "traffic_light" and twin_key("a.b$c") == "a_b_c"


def camera_message(camera: str | None, *detections: tuple[str, float], frame: int = 0) -> dict[str, Any]:
    """A detections message from a named camera (None: a one-camera classifier that names none)."""
    body = message(*detections, frame=frame)
    if camera is not None:
        body["camera"] = camera
    return body


def test_a_rule_per_camera() -> None:
    """`cameras` limits a rule to those cameras; a camera's own rule wins over one for every camera; streaks
    count per camera; the alert names its camera."""
    rules = parse_rules(
        [
            {"class": "person", "minConfidence": 0.5, "cameras": ["door"]},
            {"class": "person", "minConfidence": 0.9, "minConsecutiveFrames": 2},
            {"class": "dog", "cameras": ["yard", "door"]},
        ]
    )
    assert rules[0].to_twin()["cameras"] == ["door"] and "cameras" not in rules[1].to_twin()
    engine = RulesEngine(rules, clock=Clock())
    door = engine.evaluate(camera_message("door", ("person", 0.6), ("dog", 0.7)))
    assert sorted((a.class_name, a.camera) for a in door) == [("dog", "door"), ("person", "door")]
    assert door[0].body("dev", "alert")["camera"] == "door"
    # lobby: person needs 0.9 over two consecutive lobby messages; a door message in between breaks nothing
    assert not engine.evaluate(camera_message("lobby", ("person", 0.95), ("dog", 0.99)))  # no dog rule here
    engine.evaluate(camera_message("door", ("cat", 0.9)))
    second = engine.evaluate(camera_message("lobby", ("person", 0.95)))
    assert [(a.class_name, a.camera, a.consecutive_frames) for a in second] == [("person", "lobby", 2)]
    # a message without a camera is the default camera's: the all-cameras rule applies, the door rule does not
    assert engine.rule_for("person") is rules[1] and engine.rule_for("person", "door") is rules[0]
    assert engine.rule_for("dog") is None
    assert "door/person" in engine.counts() and "lobby/person" in engine.counts()


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ([{"class": "person", "cameras": ["a"]}, {"class": "person", "cameras": ["b", "a"]}], "on camera 'a'"),
        ([{"class": "person", "cameras": []}], r"rules\[0\]\.cameras"),
        ([{"class": "person", "cameras": [" "]}], "must not be blank"),
        ([{"class": "person", "cameras": "door"}], r"rules\[0\]\.cameras"),
    ],
)
def test_bad_camera_lists_are_refused(document: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(RulesError, match=error):
        parse_rules(document)


def test_a_message_with_a_bad_camera_is_refused() -> None:
    engine = RulesEngine(parse_rules([{"class": "*"}]))
    with pytest.raises(ValueError, match="'camera' must be a non-empty string"):
        engine.evaluate(camera_message("", ("person", 0.9)))


class StoredFirstConnection(OfflineModuleConnection):
    """Online, and records at each output how many events the webhook's disk queue held then."""

    enabled = True

    def __init__(self, service_of: Callable[[], AlertService]) -> None:
        super().__init__("test")
        self.service_of = service_of
        self.sent: list[tuple[str | None, int]] = []

    def send_output(self, output_name: str, body: Any, properties: Any = None, message_id: Any = None) -> None:
        webhook = self.service_of().webhook
        assert webhook is not None
        self.sent.append((message_id, len(webhook.queue)))
        raise IoTError("the hub is away")  # the module may die here as well: the alert must be on disk by now


def test_an_alert_is_on_disk_for_the_webhook_before_it_goes_upstream_with_the_same_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module killed while sending upstream (the hub slow or away) lost the webhook's copy: it was stored after."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        AlertSettings,
        alert_classes="person",
        alert_webhook_url="http://127.0.0.1:9/alerts",
        alert_queue_dir=str(tmp_path / "queue"),
    )
    holder: list[AlertService] = []
    connection = StoredFirstConnection(lambda: holder[0])
    service = AlertService(settings, connection, ("dev", "alert"))
    holder.append(service)
    service.attach()
    connection.dispatch_input(InputMessage("detections", b'{"detections": [{"label": "person", "confidence": 1}]}'))
    assert service.webhook is not None
    assert len(connection.sent) == 1
    message_id, stored = connection.sent[0]
    assert stored == 1
    peeked = service.webhook.queue.peek()
    assert peeked is not None and peeked[1]["id"] == message_id
    assert service.stats()["alerts_not_sent"] == 1


def test_the_rules_in_force_are_logged_once_not_again_for_a_twin_that_keeps_them(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    connection = OfflineModuleConnection("test")
    service = AlertService(load_settings(AlertSettings, alert_classes="person"), connection, ("dev", "alert"))
    service.attach()
    with caplog.at_level("INFO", logger="edgevision.alerts.service"):
        service.start()
        connection.dispatch_desired({"$version": 1}, True)  # the whole twin, without rules: the same defaults
        connection.dispatch_desired({"rules": [{"class": "dog", "minConfidence": 0.3}], "$version": 2}, False)
        connection.dispatch_desired({"rules": [{"class": "dog", "minConfidence": 0.3}], "$version": 3}, False)
        service.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert rules from the")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("alert rules from the environment") and lines[1].startswith("alert rules from the twin")
