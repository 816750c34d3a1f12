"""Alert rules and the engine that applies them to `detections` messages.

A rule names a class (or `*` for any class), the confidence it must reach, how many consecutive messages must
hold it before an alert, and a cooldown between two alerts of that class; optionally the cameras it watches
(`"cameras": ["door"]`, default every camera). A rule for a class wins over `*`, and a rule naming the camera
wins over one for every camera. Streaks and cooldowns count per camera and class."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANY_CLASS = "*"
MAX_RULES = 200
DEFAULT_CAMERA = "default"  # the camera of a message that names none (a one-camera classifier)


class RulesError(ValueError):
    """A rules document that cannot be used; the message says where and why."""


class AlertRule(BaseModel):
    """One rule, as the twin's desired properties hold it (camelCase)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    class_name: str = Field(alias="class", min_length=1, max_length=100)
    min_confidence: float = Field(0.6, alias="minConfidence", ge=0, le=1)
    cooldown_seconds: float = Field(30.0, alias="cooldownSeconds", ge=0, le=86400)
    min_consecutive_frames: int = Field(1, alias="minConsecutiveFrames", ge=1, le=10000)
    cameras: tuple[str, ...] | None = Field(None, min_length=1, max_length=64)

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not name.strip() for name in value):
            raise ValueError("camera names must not be blank")
        return None if value is None else tuple(name.strip() for name in value)

    def watches(self, camera: str) -> bool:
        """True when the rule applies to `camera`."""
        return self.cameras is None or camera in self.cameras

    @field_validator("class_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    def to_twin(self) -> dict[str, Any]:
        """The camelCase form, as reported (without `cameras` when the rule watches every camera)."""
        document = self.model_dump(by_alias=True)
        if self.cameras is None:
            del document["cameras"]
        else:
            document["cameras"] = list(self.cameras)
        return document


def _where(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    return "rules" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc)


def parse_rules(document: Any) -> tuple[AlertRule, ...]:
    """A list of rule objects -> rules; raises RulesError naming the first problems (index and field)."""
    if not isinstance(document, list):
        raise RulesError(f"rules must be a list of rule objects, got {type(document).__name__}")
    if len(document) > MAX_RULES:
        raise RulesError(f"at most {MAX_RULES} rules, got {len(document)}")
    rules = []
    problems = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            problems.append(f"rules[{index}]: must be an object, got {type(item).__name__}")
            continue
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as e:
            for err in e.errors():
                problems.append(f"rules[{index}]{_where(err)[5:]}: {err['msg']}")
    if problems:
        raise RulesError("; ".join(problems[:5]))
    for index, rule in enumerate(rules):
        for other in rules[:index]:
            if other.class_name != rule.class_name:
                continue
            if rule.cameras is None and other.cameras is None:
                raise RulesError(f"two rules for class {rule.class_name!r}")
            shared = set(rule.cameras or ()) & set(other.cameras or ())
            if shared:
                raise RulesError(f"two rules for class {rule.class_name!r} on camera {sorted(shared)[0]!r}")
    return tuple(rules)


@dataclass(frozen=True)
class Alert:
    """One alert: the class, its confidence in the message that raised it, and where it came from."""

    class_name: str
    confidence: float
    model: str | None
    model_version: str | None
    frame_time: str | None
    frame_index: int | None
    box: list[float] | None
    rule: AlertRule
    consecutive_frames: int
    camera: str = DEFAULT_CAMERA

    def body(self, device: str | None, module: str | None, now: float | None = None) -> dict[str, Any]:
        """The JSON body of the `alerts` output and the webhook event's data."""
        moment = time.time() if now is None else now
        return {
            "class": self.class_name,
            "confidence": round(self.confidence, 4),
            "model": self.model,
            "modelVersion": self.model_version,
            "frameTime": self.frame_time,
            "frameIndex": self.frame_index,
            "box": self.box,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z",
            "device": device,
            "module": module,
            "rule": self.rule.to_twin(),
            "consecutiveFrames": self.consecutive_frames,
            "camera": self.camera,
        }


@dataclass(frozen=True)
class _Detection:
    label: str
    confidence: float
    box: list[float] | None


def parse_detections(message: Any) -> tuple[dict[str, Any], list[_Detection]]:
    """A `detections` message -> (its header fields, its detections); raises ValueError saying what is wrong."""
    if not isinstance(message, dict):
        raise ValueError(f"a detections message is a JSON object, got {type(message).__name__}")
    items = message.get("detections")
    if not isinstance(items, list):
        raise ValueError("a detections message needs a list 'detections'")
    detections = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"detections[{index}] is not an object")
        label, confidence = item.get("label"), item.get("confidence")
        if not isinstance(label, str) or not label:
            raise ValueError(f"detections[{index}].label must be a non-empty string")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
            raise ValueError(f"detections[{index}].confidence must be a number in 0..1")
        box = item.get("box")
        if box is not None and (
            not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)
        ):
            raise ValueError(f"detections[{index}].box must be 4 numbers")
        detections.append(_Detection(label, float(confidence), box))
    header = {
        "model": message.get("model") if isinstance(message.get("model"), str) else None,
        "modelVersion": message.get("modelVersion") if isinstance(message.get("modelVersion"), str) else None,
        "frameTime": message.get("frameTime") if isinstance(message.get("frameTime"), str) else None,
        "frameIndex": message.get("frameIndex") if isinstance(message.get("frameIndex"), int) else None,
    }
    camera = message.get("camera", DEFAULT_CAMERA)
    if not isinstance(camera, str) or not camera:
        raise ValueError("a detections message's 'camera' must be a non-empty string")
    header["camera"] = camera
    return header, detections


@dataclass
class _ClassState:
    streak: int = 0
    last_alert_at: float | None = None
    detections: int = 0
    alerts: int = 0
    suppressed: int = 0


class RulesEngine:
    """Applies the active rules to each `detections` message; thread-safe (rules change from the twin thread
    while messages arrive on another)."""

    def __init__(self, rules: tuple[AlertRule, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rules: tuple[AlertRule, ...] = ()
        self._state: dict[tuple[str, str], _ClassState] = {}
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The active rules."""
        with self._lock:
            return self._rules

    def set_rules(self, rules: tuple[AlertRule, ...]) -> None:
        """Replace the rules. Streaks restart (a frame counted under the old rule may not pass the new one);
        cooldowns and counts carry on."""
        with self._lock:
            self._rules = tuple(rules)
            for state in self._state.values():
                state.streak = 0

    def rule_for(self, label: str, camera: str = DEFAULT_CAMERA) -> AlertRule | None:
        """The rule that applies to `label` seen by `camera`: its own class before `*`, a rule naming the camera
        before one for every camera; None when no rule applies."""
        with self._lock:
            return self._rule_for(label, camera)

    def _rule_for(self, label: str, camera: str) -> AlertRule | None:
        for class_name in (label, ANY_CLASS):
            candidates = [r for r in self._rules if r.class_name == class_name and r.watches(camera)]
            if candidates:
                return min(candidates, key=lambda r: r.cameras is None)
        return None

    def counts(self) -> dict[str, dict[str, int]]:
        """Per class (`camera/class` for a camera other than `default`): messages holding it at its rule's
        confidence, alerts raised, alerts held back by cooldown."""
        with self._lock:
            return {
                (label if camera == DEFAULT_CAMERA else f"{camera}/{label}"): {
                    "detections": s.detections,
                    "alerts": s.alerts,
                    "suppressedByCooldown": s.suppressed,
                }
                for (camera, label), s in sorted(self._state.items())
            }

    def evaluate(self, message: Any) -> list[Alert]:
        """The alerts one `detections` message raises; raises ValueError for a malformed message."""
        header, detections = parse_detections(message)
        now = self._clock()
        camera = header["camera"]
        best: dict[str, tuple[_Detection, AlertRule]] = {}
        with self._lock:
            for detection in detections:
                rule = self._rule_for(detection.label, camera)
                if rule is None or detection.confidence < rule.min_confidence:
                    continue
                if detection.label not in best or detection.confidence > best[detection.label][0].confidence:
                    best[detection.label] = (detection, rule)
            for (state_camera, label), state in self._state.items():
                if state_camera == camera and label not in best:
                    state.streak = 0
            alerts = []
            for label, (detection, rule) in best.items():
                state = self._state.setdefault((camera, label), _ClassState())
                state.detections += 1
                state.streak += 1
                if state.streak < rule.min_consecutive_frames:
                    continue
                if state.last_alert_at is not None and now - state.last_alert_at < rule.cooldown_seconds:
                    state.suppressed += 1
                    continue
                state.last_alert_at = now
                state.alerts += 1
                alerts.append(
                    Alert(
                        class_name=label,
                        confidence=detection.confidence,
                        model=header["model"],
                        model_version=header["modelVersion"],
                        frame_time=header["frameTime"],
                        frame_index=header["frameIndex"],
                        box=detection.box,
                        rule=rule,
                        consecutive_frames=state.streak,
                        camera=camera,
                    )
                )
            return alerts
