"""Classifier module: runs the model MODEL_NAME on frames from CAMERA_PATH, prints per frame the top result and
the running FPS, and, under IoT Edge (or the local emulator), serves the solution's flows through edgeHub.
Without an edge environment it says once that IoT Hub features are off and keeps its local job running.
Ctrl-C or SIGTERM (what the IoT Edge runtime sends on stop) ends it cleanly with a summary."""

from __future__ import annotations

import logging
import sys
import time

from edgevision.config import SettingsError, VisionSettings, load_settings
from edgevision.detections import DetectionsOutput, DetectionsSettings
from edgevision.errors import EdgeVisionError
from edgevision.frames import SourceOptions, describe_source, open_source
from edgevision.iot import ModuleConnection, ShutdownSignal, connect_module
from edgevision.pipeline import ConsoleReporter, Consumer, Pipeline, PipelineOptions, PipelineStats, format_summary
from edgevision.preview import PreviewServer, PreviewSettings
from edgevision.vision import build_task_from_settings

log = logging.getLogger("classifier")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class ClassifierSettings(PreviewSettings, DetectionsSettings, VisionSettings):
    """Everything the classifier reads from its environment. Each flow adds its settings class as a base."""


def build_consumers(settings: ClassifierSettings, connection: ModuleConnection, stats: PipelineStats) -> list[Consumer]:
    """The consumers of the running pipeline; each flow appends its own (the camera is opened once)."""
    consumers: list[Consumer] = [ConsoleReporter(stats)]
    consumers.append(DetectionsOutput(connection, settings))
    if settings.preview_port:
        consumers.append(PreviewServer(settings, fps=lambda: stats.fps))
    return consumers


def build_pipeline(settings: ClassifierSettings, connection: ModuleConnection) -> Pipeline:
    """Model, engine and frame source from the settings, wired to the consumers."""
    task = build_task_from_settings(settings, __file__)
    source = open_source(
        settings.camera_path,
        SourceOptions(
            loop=settings.loop_video,
            watchdog_s=settings.frame_watchdog_seconds,
            realtime=settings.video_realtime,
        ),
    )
    stats = PipelineStats()
    options = PipelineOptions(every_frame=None if settings.process_every_frame else False)
    return Pipeline(source, task, build_consumers(settings, connection, stats), options, stats)


def main() -> int:
    """Run until the source ends, SIGTERM or Ctrl-C; the exit status says why it ended."""
    try:
        settings = load_settings(ClassifierSettings)
    except SettingsError as e:
        print(f"classifier: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("starting: model %s on %s", settings.model_name, describe_source(settings.camera_path))
    shutdown = ShutdownSignal().install()
    try:
        connection = connect_module()
        pipeline = build_pipeline(settings, connection)
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG
    try:
        pipeline.start()
        connection.start()
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        pipeline.close()
        pipeline.task.engine.close()
        connection.close()
        return EXIT_CONFIG
    shutdown.on_shutdown(pipeline.stop)
    started = time.monotonic()
    try:
        while not pipeline.wait(0.2):
            pass
    finally:
        pipeline.close()
        connection.close()
        pipeline.task.engine.close()
    print(format_summary(pipeline.stats, time.monotonic() - started), flush=True)
    if pipeline.error is not None:
        log.error("stopped on error: %s", pipeline.error)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
