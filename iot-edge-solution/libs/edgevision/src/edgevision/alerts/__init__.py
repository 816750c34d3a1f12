"""Vision alerts: rules over `detections` messages (class, confidence, consecutive frames, cooldown), the alert
module's service (twin rules, `alerts` output) and a webhook with a bounded on-disk queue."""

from edgevision.alerts.rules import ANY_CLASS, Alert, AlertRule, RulesEngine, RulesError, parse_detections, parse_rules
from edgevision.alerts.service import AlertService, AlertSettings, module_identity, twin_key
from edgevision.alerts.webhook import DiskQueue, WebhookSender, make_event, redact_url

__all__ = [
    "ANY_CLASS",
    "Alert",
    "AlertRule",
    "AlertService",
    "AlertSettings",
    "DiskQueue",
    "RulesEngine",
    "RulesError",
    "WebhookSender",
    "make_event",
    "module_identity",
    "parse_detections",
    "parse_rules",
    "redact_url",
    "twin_key",
]
