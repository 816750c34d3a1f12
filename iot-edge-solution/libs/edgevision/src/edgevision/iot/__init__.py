"""Thin helpers over `azure-iot-device` for a module: its connection to edgeHub from the edge environment,
direct-method, twin and input handlers, output messages, and graceful shutdown on SIGTERM."""

from edgevision.iot.connection import (
    EDGE_ENVIRONMENT_VARIABLES,
    EdgeModuleConnection,
    InputMessage,
    IoTError,
    MethodError,
    ModuleConnection,
    OfflineModuleConnection,
    connect_module,
    edge_environment_present,
)
from edgevision.iot.shutdown import ShutdownSignal

__all__ = [
    "EDGE_ENVIRONMENT_VARIABLES",
    "EdgeModuleConnection",
    "InputMessage",
    "IoTError",
    "MethodError",
    "ModuleConnection",
    "OfflineModuleConnection",
    "ShutdownSignal",
    "connect_module",
    "edge_environment_present",
]
