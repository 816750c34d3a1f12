"""Classifier module: runs the model MODEL_NAME on frames from CAMERA_PATH (or from every camera CAMERAS names, on
one engine, batched), prints a status line every STATUS_INTERVAL_SECONDS (fps, latency, frames, requests served,
camera; LOG_EVERY_FRAME=True: a line per frame) and its events, and, under IoT Edge (or the local emulator), serves
the solution's flows through edgeHub.
Without an edge environment it says once that IoT Hub features are off and keeps its local job running.
Ctrl-C or SIGTERM (what the IoT Edge runtime sends on stop) ends it cleanly with a summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from edgevision.config import VisionSettings, module_settings
from edgevision.detections import DetectionsOutput, DetectionsSettings
from edgevision.errors import EdgeVisionError
from edgevision.frames import SourceOptions, describe_source, open_source
from edgevision.iot import ModuleConnection, ShutdownSignal, connect_module
from edgevision.manager import ModelManager
from edgevision.pipeline import (
    ConsoleReporter,
    Consumer,
    MultiCameraOptions,
    MultiCameraPipeline,
    Pipeline,
    PipelineOptions,
    PipelineStats,
    format_cameras,
    format_summary,
)
from edgevision.preview import PreviewServer, PreviewSettings
from edgevision.scoring import ScoringServer, ScoringSettings
from edgevision.twofactor import TwoFactorSettings
from edgevision.twofactor.service import request_service_from_settings
from edgevision.updates import ModelUpdater, ModelUpdateSettings
from edgevision.vision import BUNDLED_MODELS_FROM_MODULE, load_model_from_settings

log = logging.getLogger("classifier")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
CAMERA_STATUS_EVERY_S = 10.0


class ClassifierSettings(  # pylint: disable=too-many-ancestors  # one base per flow, by design
    TwoFactorSettings, ModelUpdateSettings, ScoringSettings, PreviewSettings, DetectionsSettings, VisionSettings
):
    """Everything the classifier reads from its environment. Each flow adds its settings class as a base."""


class Served:
    """What the status line counts as served: /score requests and two-factor requests answered."""

    def __init__(self) -> None:
        self.scoring: ScoringServer | None = None
        self.requests: Consumer | None = None

    def __call__(self) -> str:
        parts = []
        if self.scoring is not None:
            total = sum(
                sample.value
                for metric in self.scoring.metrics.requests.collect()
                for sample in metric.samples
                if sample.name.endswith("_total") and sample.labels.get("path") == "/score"
            )
            parts.append(f"/score {int(total)}")
        counters = getattr(self.requests, "counters", None)
        if isinstance(counters, dict):
            answered = sum(counters.get(k, 0) for k in ("found", "expired", "rejected"))
            parts.append(f"2FA {answered} answered ({counters.get('found', 0)} found)")
        return "served " + ", ".join(parts) if parts else ""


def build_consumers(
    settings: ClassifierSettings,
    connection: ModuleConnection,
    stats: PipelineStats,
    manager: ModelManager,
    served: Served | None = None,
) -> list[Consumer]:
    """The consumers of the running pipeline; each flow appends its own (the camera is opened once)."""
    served = served if served is not None else Served()
    consumers: list[Consumer] = [
        ConsoleReporter(
            stats,
            every_frame=settings.log_every_frame,
            interval_s=settings.status_interval_seconds,
            extras=served,
        )
    ]

    # two-factor requests from the Storage queue (off, with one log line, without MODULE_KEY)
    def labels() -> tuple[str, ...]:
        current = manager.current
        return tuple(current.task.labels) if current else ()

    def model() -> str:
        current = manager.current
        return current.ref if current else settings.model_name

    cameras = [spec.name for spec in settings.camera_specs()]
    requests = request_service_from_settings(settings, connection, labels, model, cameras)
    if requests is not None:
        served.requests = requests
        consumers.append(requests)
    consumers.append(DetectionsOutput(connection, settings))
    if settings.preview_port:
        consumers.append(PreviewServer(settings, fps=lambda: stats.fps, cameras=cameras))
    return consumers


def build_models(settings: ClassifierSettings, connection: ModuleConnection) -> tuple[ModelManager, ModelUpdater]:
    """The model manager with the model in service (the one active before a restart, else MODEL_NAME), and the
    twin-driven updater (registered: call before connection.start())."""
    manager = ModelManager.from_settings(settings, __file__)
    bundled = settings.model_repository or (Path(__file__).resolve().parent / BUNDLED_MODELS_FROM_MODULE).resolve()
    updater = ModelUpdater.from_settings(settings, manager, connection, bundled)
    initial = updater.initial_model(lambda: load_model_from_settings(settings, __file__), settings.model_name)
    manager.swap(manager.build(initial))
    updater.register()
    return manager, updater


def start_scoring(
    settings: ClassifierSettings, manager: ModelManager, pipeline: Pipeline | MultiCameraPipeline
) -> ScoringServer | None:
    """The scoring API on SCORING_PORT; a port that cannot be bound is logged and the module runs on without it."""
    if not settings.scoring_enabled:
        return None
    stats = pipeline.stats
    server = ScoringServer.from_settings(settings, manager, lambda: stats.fps, pipeline.camera_status)
    try:
        server.start()
    except EdgeVisionError as e:
        log.error("scoring API off: %s", e)
        return None
    return server


def build_pipeline(
    settings: ClassifierSettings,
    connection: ModuleConnection,
    manager: ModelManager | None = None,
    served: Served | None = None,
) -> Pipeline | MultiCameraPipeline:
    """Model manager, engine and frame sources from the settings, wired to the consumers: CAMERAS gives a
    multi-camera pipeline (one engine, batched), CAMERA_PATH alone the one-camera pipeline."""
    if manager is None:
        manager, _ = build_models(settings, connection)
    options = SourceOptions(
        loop=settings.loop_video,
        watchdog_s=settings.frame_watchdog_seconds,
        realtime=settings.video_realtime,
    )
    stats = PipelineStats()
    if settings.cameras:
        cameras = [(spec.name, open_source(spec.source, options)) for spec in settings.camera_specs()]
        return MultiCameraPipeline(
            cameras,
            manager,
            build_consumers(settings, connection, stats, manager, served),
            MultiCameraOptions(max_batch=settings.max_batch),
            stats,
        )
    source = open_source(settings.camera_path, options)
    options = PipelineOptions(every_frame=None if settings.process_every_frame else False)
    return Pipeline(source, manager, build_consumers(settings, connection, stats, manager, served), options, stats)


def log_inference(
    settings: ClassifierSettings, manager: ModelManager, pipeline: Pipeline | MultiCameraPipeline
) -> None:
    """How many inferences run at once and on how many threads each (chosen from INTRA_OP_THREADS and the
    sources: see VisionSettings.concurrent_engine_threads)."""
    current = manager.current
    if current is not None:
        log.info(
            "inference: %d at once on %s, %d intra-op thread(s) each (INTRA_OP_THREADS=%d)",
            pipeline.inference_workers,
            current.task.engine.name,
            manager.threads_for(current.model),
            settings.intra_op_threads,
        )


def main() -> int:
    """Run until the source ends, SIGTERM or Ctrl-C; the exit status says why it ended."""
    settings = module_settings(ClassifierSettings, "classifier")
    if settings is None:
        return EXIT_CONFIG
    cameras = ", ".join(f"{spec.name}={spec.description}" for spec in settings.camera_specs())
    where = cameras if settings.cameras else describe_source(settings.camera_path)
    log.info("starting: model %s on %s", settings.model_name, where)
    shutdown = ShutdownSignal().install()
    try:
        connection = connect_module()
        manager, updater = build_models(settings, connection)
        served = Served()
        pipeline = build_pipeline(settings, connection, manager, served)
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG
    scoring = None
    try:
        pipeline.start()
        log_inference(settings, manager, pipeline)
        scoring = start_scoring(settings, manager, pipeline)
        served.scoring = scoring
        connection.start()
        updater.report_active()
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        pipeline.close()
        if scoring is not None:
            scoring.stop()
        updater.stop()
        manager.close()
        connection.close()
        return EXIT_CONFIG
    if not settings.log_every_frame:
        log.info(
            "running: a status line every %.0f s (LOG_EVERY_FRAME=True for a line per frame)",
            settings.status_interval_seconds,
        )
    shutdown.on_shutdown(pipeline.stop)
    started = time.monotonic()
    status_due = started + CAMERA_STATUS_EVERY_S
    try:
        while not pipeline.wait(0.2):
            if settings.cameras and time.monotonic() >= status_due:
                status_due += CAMERA_STATUS_EVERY_S
                log.info("%s", format_cameras(pipeline.camera_status()))
    finally:
        pipeline.close()
        if scoring is not None:
            scoring.stop()
        updater.stop()
        connection.close()
        manager.close()
    print(format_summary(pipeline.stats, time.monotonic() - started), flush=True)
    if settings.cameras:
        print(format_cameras(pipeline.camera_status()), flush=True)
    if pipeline.error is not None:
        log.error("stopped on error: %s", pipeline.error)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
