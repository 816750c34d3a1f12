"""A module's link to edgeHub.

`connect_module()` returns an `EdgeModuleConnection` over `IoTHubModuleClient.create_from_edge_environment()` when
the module runs under IoT Edge (or the local emulator, which sets the same environment), and otherwise an
`OfflineModuleConnection` that says once that IoT Hub features are off, so the module's local job keeps running
on a laptop without any hub."""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgevision.errors import EdgeVisionError

log = logging.getLogger(__name__)

# What IoT Edge's edgeAgent gives every module (create_from_edge_environment needs all of them) ...
EDGE_ENVIRONMENT_VARIABLES = (
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
)
# ... or what the IoT Edge simulator (and `edgehub-emulator env`) sets instead.
SIMULATOR_VARIABLES = ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")

MethodHandler = Callable[[Any], "tuple[int, Any]"]
DesiredHandler = Callable[[dict, bool], None]


class IoTError(EdgeVisionError):
    """edgeHub could not be reached, or it refused or dropped what the module sent."""


class MethodError(Exception):
    """Raised by a direct-method handler to answer with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InputMessage:
    """A message routed to one of the module's inputs."""

    input_name: str
    body: bytes
    properties: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None

    def json(self) -> Any:
        """The body as JSON; raises ValueError naming the input when it is not UTF-8 JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"message on input {self.input_name!r} is not UTF-8 JSON: {e}") from e


InputHandler = Callable[[InputMessage], None]


def edge_environment_present(env: Mapping[str, str] | None = None) -> bool:
    """True when `env` has what `create_from_edge_environment` needs (IoT Edge or the simulator's variables)."""
    env = os.environ if env is None else env
    return all(env.get(name) for name in EDGE_ENVIRONMENT_VARIABLES) or all(
        env.get(name) for name in SIMULATOR_VARIABLES
    )


def encode_body(body: Any) -> tuple[bytes, str]:
    """Bytes and content type of an output body: bytes as they are, anything else as UTF-8 JSON."""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body), "application/octet-stream"
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), "application/json"


class ModuleConnection(abc.ABC):
    """What a module needs from edgeHub. Register handlers, then `start`; `close` on shutdown."""

    enabled: bool = False

    def __init__(self) -> None:
        self._methods: dict[str, MethodHandler] = {}
        self._inputs: dict[str, InputHandler] = {}
        self._desired: list[DesiredHandler] = []
        self.counters = {"outputs_sent": 0, "outputs_failed": 0, "methods": 0, "inputs": 0, "bad_inputs": 0}

    def on_method(self, name: str, handler: MethodHandler) -> None:
        """Answer direct method `name` with `handler(payload) -> (status, payload)`; the handler may raise
        MethodError for an error status."""
        self._methods[name] = handler

    def on_input(self, name: str, handler: InputHandler) -> None:
        """Call `handler(message)` for every message routed to input `name`."""
        self._inputs[name] = handler

    def on_desired(self, handler: DesiredHandler) -> None:
        """Call `handler(desired, complete)`: with the whole desired document (complete=True) at start and after
        each reconnect, and with each patch (complete=False) in between."""
        self._desired.append(handler)

    def dispatch_method(self, name: str, payload: Any) -> tuple[int, Any]:
        """Run the handler of method `name`; unknown methods are 404, handler bugs 500 (logged, not returned)."""
        self.counters["methods"] += 1
        handler = self._methods.get(name)
        if handler is None:
            return 404, {"error": f"unknown method {name!r}; this module has {sorted(self._methods)}"}
        try:
            return handler(payload)
        except MethodError as e:
            return e.status, {"error": e.message}
        except Exception:  # pylint: disable=broad-exception-caught
            log.exception("method %s failed", name)
            return 500, {"error": f"method {name} failed inside the module; see its log"}

    def dispatch_input(self, message: InputMessage) -> None:
        """Hand a routed message to its input's handler; a handler error is logged and the next message comes."""
        self.counters["inputs"] += 1
        handler = self._inputs.get(message.input_name)
        if handler is None:
            self.counters["bad_inputs"] += 1
            log.warning("message on input %r, which this module does not handle", message.input_name)
            return
        try:
            handler(message)
        except ValueError as e:
            self.counters["bad_inputs"] += 1
            log.warning("dropped a message on input %r: %s", message.input_name, e)
        except Exception:  # pylint: disable=broad-exception-caught
            self.counters["bad_inputs"] += 1
            log.exception("input %s handler failed", message.input_name)

    def dispatch_desired(self, desired: dict, complete: bool) -> None:
        """Hand desired properties to every desired handler; one handler's error does not stop the others."""
        for handler in self._desired:
            try:
                handler(desired, complete)
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("desired-properties handler %r failed", handler)

    @abc.abstractmethod
    def start(self) -> None:
        """Connect and install the handlers; the desired handlers get the whole desired document."""

    @abc.abstractmethod
    def send_output(
        self,
        output_name: str,
        body: Any,
        properties: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Send `body` (JSON unless bytes) on output `output_name` with application `properties`; raises IoTError.
        `message_id` becomes the message's system property `message-id` (`$.mid`, `$messageId` in routes and
        upstream): a stable id lets consumers drop a message sent again after a crash."""

    @abc.abstractmethod
    def report(self, patch: dict) -> None:
        """Patch the module twin's reported properties; raises IoTError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect; safe to call twice."""


class OfflineModuleConnection(ModuleConnection):
    """No edge environment: methods, twin and outputs are off. Outputs and reports are counted and the last
    reported properties kept, so the module's local job behaves the same."""

    enabled = False

    def __init__(self, reason: str = "") -> None:
        super().__init__()
        self.reason = reason
        self.reported: dict = {}
        self._said = False

    def start(self) -> None:
        if not self._said:
            self._said = True
            log.warning(
                "IoT Hub features are off (direct methods, twin, outputs): %s. The local job keeps running; "
                "run the module under IoT Edge or `make emulator-up` to turn them on.",
                self.reason or "no IoT Edge environment",
            )

    def send_output(
        self,
        output_name: str,
        body: Any,
        properties: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> None:
        encode_body(body)  # the same errors for an unserialisable body as online
        self.counters["outputs_failed"] += 1

    def report(self, patch: dict) -> None:
        self.reported.update(patch)

    def close(self) -> None:
        return None


class EdgeModuleConnection(ModuleConnection):
    """The module client of azure-iot-device, created from the edge environment."""

    enabled = True

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._closed = False
        self._lock = threading.Lock()
        self._was_connected = False

    @classmethod
    def from_edge_environment(cls, **client_options: Any) -> EdgeModuleConnection:
        """`IoTHubModuleClient.create_from_edge_environment(**client_options)`, errors as IoTError."""
        from azure.iot.device import IoTHubModuleClient  # pylint: disable=import-outside-toplevel

        try:
            return cls(IoTHubModuleClient.create_from_edge_environment(**client_options))
        except Exception as e:  # the SDK raises OSError, ValueError and its own errors here
            raise IoTError(f"cannot create the module client from the edge environment: {e}") from e

    @property
    def client(self) -> Any:
        """The SDK client, for what these helpers do not cover."""
        return self._client

    def start(self) -> None:
        client = self._client
        client.on_method_request_received = self._on_method_request
        client.on_twin_desired_properties_patch_received = self._on_desired_patch
        client.on_message_received = self._on_message
        client.on_connection_state_change = self._on_connection_state_change
        try:
            client.connect()
        except Exception as e:
            raise IoTError(f"cannot connect to edgeHub: {e}") from e
        self._was_connected = True
        if self._desired:
            self._deliver_whole_twin()

    def _deliver_whole_twin(self) -> None:
        try:
            twin = self._client.get_twin()
        except Exception as e:  # pylint: disable=broad-exception-caught
            log.warning("cannot read the module twin: %s", e)
            return
        self.dispatch_desired(dict(twin.get("desired", {})), True)

    def _on_connection_state_change(self) -> None:
        connected = bool(self._client.connected)
        if connected and not self._was_connected and self._desired:
            # patches sent while the module was away are not replayed: read the whole twin again
            log.info("reconnected to edgeHub; reading the module twin again")
            threading.Thread(target=self._deliver_whole_twin, name="twin-refresh", daemon=True).start()
        if not connected and self._was_connected:
            log.warning("disconnected from edgeHub; the SDK reconnects")
        self._was_connected = connected

    def _on_method_request(self, request: Any) -> None:
        from azure.iot.device import MethodResponse  # pylint: disable=import-outside-toplevel

        status, payload = self.dispatch_method(request.name, request.payload)
        try:
            self._client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))
        except Exception as e:  # pylint: disable=broad-exception-caught
            log.warning("could not answer method %s: %s", request.name, e)

    def _on_desired_patch(self, patch: dict) -> None:
        self.dispatch_desired(dict(patch), False)

    def _on_message(self, message: Any) -> None:
        data = message.data
        body = data if isinstance(data, bytes) else str(data).encode("utf-8")
        self.dispatch_input(
            InputMessage(
                input_name=message.input_name or "",
                body=body,
                properties={str(k): str(v) for k, v in (message.custom_properties or {}).items()},
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
            )
        )

    def send_output(
        self,
        output_name: str,
        body: Any,
        properties: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> None:
        from azure.iot.device import Message  # pylint: disable=import-outside-toplevel

        data, content_type = encode_body(body)
        message = Message(data, message_id=message_id, content_encoding="utf-8", content_type=content_type)
        for key, value in (properties or {}).items():
            message.custom_properties[str(key)] = str(value)
        try:
            self._client.send_message_to_output(message, output_name)
        except Exception as e:
            self.counters["outputs_failed"] += 1
            raise IoTError(f"cannot send on output {output_name!r}: {e}") from e
        self.counters["outputs_sent"] += 1

    def report(self, patch: dict) -> None:
        try:
            self._client.patch_twin_reported_properties(patch)
        except Exception as e:
            raise IoTError(f"cannot patch reported properties: {e}") from e

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._client.shutdown()
        except Exception as e:  # pylint: disable=broad-exception-caught
            log.warning("module client did not shut down cleanly: %s", e)


def connect_module(env: Mapping[str, str] | None = None, **client_options: Any) -> ModuleConnection:
    """The module's connection (not started yet): online under IoT Edge or the emulator, else offline."""
    env = os.environ if env is None else env
    if not edge_environment_present(env):
        missing = [name for name in EDGE_ENVIRONMENT_VARIABLES if not env.get(name)]
        return OfflineModuleConnection(f"not running under IoT Edge ({', '.join(missing)} not set)")
    return EdgeModuleConnection.from_edge_environment(**client_options)
