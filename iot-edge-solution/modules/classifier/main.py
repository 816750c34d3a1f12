"""Classifier module: runs the model MODEL_NAME on frames from CAMERA_PATH and prints, per frame, the top
result and the running FPS. Ctrl-C or SIGTERM (what the IoT Edge runtime sends on stop) ends it cleanly with
a summary."""

from __future__ import annotations

import logging
import signal
import sys
import time

from edgevision.config import SettingsError, VisionSettings, load_settings
from edgevision.errors import EdgeVisionError
from edgevision.frames import SourceOptions, describe_source, open_source
from edgevision.pipeline import ConsoleReporter, Pipeline, PipelineOptions, PipelineStats, format_summary
from edgevision.vision import build_task_from_settings

log = logging.getLogger("classifier")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def build_pipeline(settings: VisionSettings) -> Pipeline:
    """Model, engine and frame source from the settings, wired to a console reporter."""
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
    return Pipeline(source, task, [ConsoleReporter(stats)], options, stats)


def main() -> int:
    """Run until the source ends, SIGTERM or Ctrl-C; the exit status says why it ended."""
    try:
        settings = load_settings(VisionSettings)
    except SettingsError as e:
        print(f"classifier: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("starting: model %s on %s", settings.model_name, describe_source(settings.camera_path))
    try:
        pipeline = build_pipeline(settings)
        pipeline.start()
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    try:
        while not pipeline.wait(0.2):
            pass
    finally:
        pipeline.close()
        pipeline.task.engine.close()
    print(format_summary(pipeline.stats, time.monotonic() - started), flush=True)
    if pipeline.error is not None:
        log.error("stopped on error: %s", pipeline.error)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
