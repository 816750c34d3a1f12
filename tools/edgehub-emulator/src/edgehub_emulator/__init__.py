"""Local IoT Hub + edgeHub + edgeAgent stand-in that the unmodified Azure IoT SDKs talk to."""

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.errors import EmulatorError

__all__ = ["EmulatorConfig", "EmulatorError"]
__version__ = "0.1.0"
