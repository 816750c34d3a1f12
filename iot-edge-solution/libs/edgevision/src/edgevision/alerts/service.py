"""The alert module's work, as a library: rules from the twin (defaults from the environment) over the
`detections` input, alerts on the `alerts` output (to `$upstream`) and, optionally, to a webhook."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import Field, SecretStr, field_validator

from edgevision.alerts.rules import ANY_CLASS, Alert, AlertRule, RulesEngine, RulesError, parse_rules
from edgevision.alerts.webhook import DiskQueue, WebhookSender, make_event
from edgevision.config import ModuleSettings
from edgevision.iot import InputMessage, IoTError, ModuleConnection

log = logging.getLogger(__name__)

INPUT_NAME = "detections"
OUTPUT_NAME = "alerts"
_TWIN_KEY_FORBIDDEN = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")


class AlertSettings(ModuleSettings):
    """Everything the alert module reads from its environment. The default rules apply until the twin's desired
    properties hold `rules` (and again when `rules` is set to null)."""

    alert_classes: str = Field(
        ANY_CLASS, description="ALERT_CLASSES: comma-separated classes the default rules cover; * = any class."
    )
    alert_min_confidence: float = Field(
        0.6, ge=0, le=1, description="ALERT_MIN_CONFIDENCE: default rules' confidence (0..1) a class must reach."
    )
    alert_cooldown_seconds: float = Field(
        30.0, ge=0, le=86400, description="ALERT_COOLDOWN_SECONDS: default rules' time between two alerts of a class."
    )
    alert_min_consecutive_frames: int = Field(
        1, ge=1, le=10000, description="ALERT_MIN_CONSECUTIVE_FRAMES: default rules' consecutive messages needed."
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="ALERT_WEBHOOK_URL: http(s) endpoint that gets each alert as an Event Grid event; unset: off."
    )
    alert_queue_dir: Path = Field(
        Path("alert-queue"), description="ALERT_QUEUE_DIR: folder of the webhook's undelivered alerts."
    )
    alert_queue_max: int = Field(
        1000, ge=1, le=1_000_000, description="ALERT_QUEUE_MAX: undelivered alerts kept before the oldest drop."
    )
    alert_webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="ALERT_WEBHOOK_TIMEOUT_SECONDS: one POST's timeout."
    )
    alert_webhook_max_backoff_seconds: float = Field(
        60.0, gt=0, le=3600, description="ALERT_WEBHOOK_MAX_BACKOFF_SECONDS: longest wait between two retries."
    )
    alert_report_interval_seconds: float = Field(
        10.0, gt=0, le=3600, description="ALERT_REPORT_INTERVAL_SECONDS: how often changed counts are reported."
    )

    @field_validator("alert_classes")
    @classmethod
    def _some_class(cls, value: str) -> str:
        classes = [c.strip() for c in value.split(",") if c.strip()]
        if not classes:
            raise ValueError("name at least one class, or * for any")
        return ",".join(classes)

    def default_rules(self) -> tuple[AlertRule, ...]:
        """One rule per ALERT_CLASSES entry with the ALERT_* defaults."""
        return tuple(
            AlertRule(
                class_name=name,
                min_confidence=self.alert_min_confidence,
                cooldown_seconds=self.alert_cooldown_seconds,
                min_consecutive_frames=self.alert_min_consecutive_frames,
            )
            for name in dict.fromkeys(self.alert_classes.split(","))
        )


def module_identity(env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(device id, module id) from the IoT Edge environment or the simulator's connection string."""
    env = os.environ if env is None else env
    device, module = env.get("IOTEDGE_DEVICEID"), env.get("IOTEDGE_MODULEID")
    if device and module:
        return device, module
    parts = dict(part.split("=", 1) for part in env.get("EdgeHubConnectionString", "").split(";") if "=" in part)
    return parts.get("DeviceId"), parts.get("ModuleId")


def twin_key(name: str) -> str:
    """A class name as a twin property name (no '.', '$', spaces or control characters)."""
    return _TWIN_KEY_FORBIDDEN.sub("_", name) or "_"


class AlertService:
    """Wires the rules engine to the module connection: register with `attach`, then the connection's `start`."""

    def __init__(
        self,
        settings: AlertSettings,
        connection: ModuleConnection,
        identity: tuple[str | None, str | None] = (None, None),
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.identity = identity
        self.engine = RulesEngine(settings.default_rules(), **({"clock": clock} if clock else {}))
        self.rules_source = "environment"
        self.rules_error: str | None = None
        self.webhook: WebhookSender | None = None
        url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
        if url:
            self.webhook = WebhookSender(
                url,
                DiskQueue(settings.alert_queue_dir, settings.alert_queue_max),
                timeout_s=settings.alert_webhook_timeout_seconds,
                max_backoff_s=settings.alert_webhook_max_backoff_seconds,
            )
        self.counters = {"messages": 0, "bad_messages": 0, "alerts": 0, "alerts_not_sent": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None
        self._last_reported_counts: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the input and desired-properties handlers; call before the connection's `start`."""
        self.connection.on_input(INPUT_NAME, self.on_detections)
        self.connection.on_desired(self.on_desired)

    def start(self) -> None:
        """Start the webhook sender and the periodic counts report."""
        log.info("alert rules from the environment: %s", [r.to_twin() for r in self.settings.default_rules()])
        if self.webhook is not None:
            self.webhook.start()
        self._reporter = threading.Thread(target=self._report_loop, name="alert-report", daemon=True)
        self._reporter.start()

    def close(self) -> None:
        """Stop the reporter and the webhook sender (undelivered alerts stay queued on disk)."""
        self._stop.set()
        if self._reporter is not None:
            self._reporter.join(5)
        if self.webhook is not None:
            self.webhook.close()
        log.info("alert module: %s", self.stats())

    def stats(self) -> dict[str, Any]:
        """Counters of messages and alerts, and the webhook's."""
        with self._lock:
            stats: dict[str, Any] = dict(self.counters)
        if self.webhook is not None:
            stats["webhook"] = self.webhook.stats()
        return stats

    # -- rules from the twin ---------------------------------------------------------------------------------
    def on_desired(self, desired: dict, complete: bool) -> None:
        """Apply `rules` from the desired properties (the whole document or a patch); report the outcome."""
        if "rules" not in desired:
            if not complete:
                return  # a patch of something else
            rules, source = self.settings.default_rules(), "environment"
        elif desired["rules"] is None:
            rules, source = self.settings.default_rules(), "environment"
        else:
            try:
                rules, source = parse_rules(desired["rules"]), "twin"
            except RulesError as e:
                log.error("desired rules refused, keeping the previous ones: %s", e)
                self.rules_error = str(e)
                self._report_rules()
                return
        unchanged = source == self.rules_source and [r.to_twin() for r in rules] == [
            r.to_twin() for r in self.engine.rules
        ]
        self.engine.set_rules(rules)
        self.rules_source = source
        self.rules_error = None
        if not unchanged:  # the start-up line already said which rules apply: a twin that keeps them says nothing
            log.info("alert rules from the %s: %s", source, [r.to_twin() for r in rules])
        self._report_rules()

    def reported_rules(self) -> dict[str, Any]:
        """What the twin's reported properties say about the rules."""
        return {
            "rules": [rule.to_twin() for rule in self.engine.rules],
            "rulesSource": self.rules_source,
            "rulesError": self.rules_error,
        }

    def reported_counts(self) -> dict[str, Any]:
        """Counts per class (twin-safe keys) and totals."""
        counts = {twin_key(label): {"class": label, **values} for label, values in self.engine.counts().items()}
        with self._lock:
            totals = dict(self.counters)
        return {"counts": counts, "totals": totals}

    def _report(self, patch: dict[str, Any]) -> None:
        try:
            self.connection.report(patch)
        except IoTError as e:
            log.warning("cannot report %s: %s", sorted(patch), e)

    def _report_rules(self) -> None:
        self._report({**self.reported_rules(), **self.reported_counts()})

    def _report_loop(self) -> None:
        while not self._stop.wait(self.settings.alert_report_interval_seconds):
            counts = self.reported_counts()
            if counts != self._last_reported_counts:
                self._last_reported_counts = counts
                self._report(counts)

    # -- detections in, alerts out ---------------------------------------------------------------------------
    def on_detections(self, message: InputMessage) -> None:
        """Evaluate one `detections` message; raises ValueError for a malformed one (the connection counts it)."""
        with self._lock:
            self.counters["messages"] += 1
        try:
            alerts = self.engine.evaluate(message.json())
        except ValueError:
            with self._lock:
                self.counters["bad_messages"] += 1
            raise
        for alert in alerts:
            self.raise_alert(alert)

    def raise_alert(self, alert: Alert) -> None:
        """Store one alert for the webhook, then send it upstream. The webhook's event id is the upstream
        message's id too, so a copy (a delivery repeated after a crash) carries the same id everywhere."""
        body = alert.body(*self.identity)
        event = make_event(body, *self.identity)
        if self.webhook is not None:
            # on disk first: a module killed from here on still delivers the alert after its restart
            self.webhook.enqueue(event)
        properties = {"alertClass": alert.class_name, "confidence": f"{alert.confidence:.4f}"}
        log.info(
            "alert: %s %.2f (model %s, frame %s, id %s)",
            alert.class_name,
            alert.confidence,
            alert.model,
            alert.frame_time,
            event["id"],
        )
        with self._lock:
            self.counters["alerts"] += 1
        try:
            self.connection.send_output(OUTPUT_NAME, body, properties, message_id=event["id"])
        except IoTError as e:
            with self._lock:
                self.counters["alerts_not_sent"] += 1
            log.warning("alert not sent upstream: %s", e)
