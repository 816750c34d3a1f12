"""Capture -> inference -> fan-out to consumers, with FPS and per-stage latency statistics."""

from edgevision.pipeline.console import ConsoleReporter, format_cameras, format_summary
from edgevision.pipeline.core import Pipeline, PipelineOptions
from edgevision.pipeline.fanout import BaseConsumer, Consumer, Fanout, Handoff
from edgevision.pipeline.latest import LatestValue
from edgevision.pipeline.multicam import AllCamerasDownError, MultiCameraOptions, MultiCameraPipeline
from edgevision.pipeline.stats import STAGES, PipelineStats

__all__ = [
    "STAGES",
    "AllCamerasDownError",
    "BaseConsumer",
    "ConsoleReporter",
    "Consumer",
    "Fanout",
    "Handoff",
    "LatestValue",
    "MultiCameraOptions",
    "MultiCameraPipeline",
    "Pipeline",
    "PipelineOptions",
    "PipelineStats",
    "format_cameras",
    "format_summary",
]
