"""Inference engines: one interface, backends chosen by name and imported only when selected."""

from edgevision.engines.base import (
    Engine,
    EngineConfig,
    EngineError,
    EngineLoadError,
    EngineUnavailableError,
)
from edgevision.engines.registry import BACKENDS, available_backends, check_backend, create_engine

__all__ = [
    "BACKENDS",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineLoadError",
    "EngineUnavailableError",
    "available_backends",
    "check_backend",
    "create_engine",
]
