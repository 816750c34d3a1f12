"""Capture -> inference -> fan-out to consumers, with FPS and per-stage latency statistics."""

from edgevision.pipeline.console import ConsoleReporter, format_summary
from edgevision.pipeline.core import Pipeline, PipelineOptions
from edgevision.pipeline.fanout import Consumer, Fanout
from edgevision.pipeline.stats import STAGES, PipelineStats

__all__ = [
    "STAGES",
    "ConsoleReporter",
    "Consumer",
    "Fanout",
    "Pipeline",
    "PipelineOptions",
    "PipelineStats",
    "format_summary",
]
