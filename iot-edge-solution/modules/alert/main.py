"""Alert module: applies alert rules (from its twin's desired properties; defaults from ALERT_* variables) to the
classifier's `detections` messages, sends each alert on output `alerts` (routed to $upstream, with application
properties alertClass and confidence) and, when ALERT_WEBHOOK_URL is set, POSTs it to that endpoint as an Event
Grid event, keeping undelivered alerts in a bounded queue on disk across restarts.
SIGTERM (what the IoT Edge runtime sends on stop) or Ctrl-C ends it cleanly."""

from __future__ import annotations

import logging
import sys

from edgevision.alerts import AlertService, AlertSettings, module_identity
from edgevision.config import module_settings
from edgevision.errors import EdgeVisionError
from edgevision.iot import ShutdownSignal, connect_module

log = logging.getLogger("alert")

EXIT_CONFIG = 2


def main() -> int:
    """Run until SIGTERM or Ctrl-C; 2 for bad settings or no edgeHub at start."""
    settings = module_settings(AlertSettings, "alert")
    if settings is None:
        return EXIT_CONFIG
    shutdown = ShutdownSignal().install()
    try:
        connection = connect_module()
        service = AlertService(settings, connection, module_identity())
    except (EdgeVisionError, ValueError, OSError) as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG
    service.attach()
    try:
        connection.start()
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        connection.close()
        return EXIT_CONFIG
    service.start()
    log.info("alert module running: input %r, output %r", "detections", "alerts")
    try:
        shutdown.wait()
    finally:
        service.close()
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
