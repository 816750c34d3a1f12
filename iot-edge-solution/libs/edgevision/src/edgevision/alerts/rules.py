"""Alert rules and the engine that applies them to `detections` messages.

A rule names a class (or `*` for any class), the confidence it must reach, how many consecutive messages must
hold it before an alert, and a cooldown between two alerts of that class. A rule for a class wins over `*`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANY_CLASS = "*"
MAX_RULES = 200


class RulesError(ValueError):
    """A rules document that cannot be used; the message says where and why."""


class AlertRule(BaseModel):
    """One rule, as the twin's desired properties hold it (camelCase)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    class_name: str = Field(alias="class", min_length=1, max_length=100)
    min_confidence: float = Field(0.6, alias="minConfidence", ge=0, le=1)
    cooldown_seconds: float = Field(30.0, alias="cooldownSeconds", ge=0, le=86400)
    min_consecutive_frames: int = Field(1, alias="minConsecutiveFrames", ge=1, le=10000)

    @field_validator("class_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    def to_twin(self) -> dict[str, Any]:
        """The camelCase form, as reported."""
        return self.model_dump(by_alias=True)


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
    seen: set[str] = set()
    for rule in rules:
        if rule.class_name in seen:
            raise RulesError(f"two rules for class {rule.class_name!r}")
        seen.add(rule.class_name)
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
        self._rules: dict[str, AlertRule] = {}
        self._state: dict[str, _ClassState] = {}
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The active rules."""
        with self._lock:
            return tuple(self._rules.values())

    def set_rules(self, rules: tuple[AlertRule, ...]) -> None:
        """Replace the rules. Streaks restart (a frame counted under the old rule may not pass the new one);
        cooldowns and counts carry on."""
        with self._lock:
            self._rules = {rule.class_name: rule for rule in rules}
            for state in self._state.values():
                state.streak = 0

    def rule_for(self, label: str) -> AlertRule | None:
        """The rule that applies to `label`: its own, else `*`, else none."""
        with self._lock:
            return self._rules.get(label) or self._rules.get(ANY_CLASS)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per class: messages holding it at its rule's confidence, alerts raised, alerts held back by cooldown."""
        with self._lock:
            return {
                label: {"detections": s.detections, "alerts": s.alerts, "suppressedByCooldown": s.suppressed}
                for label, s in sorted(self._state.items())
            }

    def evaluate(self, message: Any) -> list[Alert]:
        """The alerts one `detections` message raises; raises ValueError for a malformed message."""
        header, detections = parse_detections(message)
        now = self._clock()
        best: dict[str, _Detection] = {}
        with self._lock:
            for detection in detections:
                rule = self._rules.get(detection.label) or self._rules.get(ANY_CLASS)
                if rule is None or detection.confidence < rule.min_confidence:
                    continue
                if detection.label not in best or detection.confidence > best[detection.label].confidence:
                    best[detection.label] = detection
            for label, state in self._state.items():
                if label not in best:
                    state.streak = 0
            alerts = []
            for label, detection in best.items():
                rule = self._rules.get(label) or self._rules[ANY_CLASS]
                state = self._state.setdefault(label, _ClassState())
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
                    )
                )
            return alerts
