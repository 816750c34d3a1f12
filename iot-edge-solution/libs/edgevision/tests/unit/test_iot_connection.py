"""The module connection without a hub: environment detection, handler dispatch and the offline stand-in.
(Through the real SDK and the emulator, the modules' integration tests drive EdgeModuleConnection.)"""

from __future__ import annotations

import logging

import pytest

from edgevision.iot import (
    EDGE_ENVIRONMENT_VARIABLES,
    InputMessage,
    MethodError,
    OfflineModuleConnection,
    ShutdownSignal,
    connect_module,
    edge_environment_present,
)
from edgevision.iot.connection import encode_body

FULL_EDGE = {name: "x" for name in EDGE_ENVIRONMENT_VARIABLES}


@pytest.mark.parametrize(
    ("env", "present"),
    [
        ({}, False),
        (FULL_EDGE, True),
        ({k: v for k, v in FULL_EDGE.items() if k != "IOTEDGE_WORKLOADURI"}, False),
        ({**FULL_EDGE, "IOTEDGE_MODULEID": ""}, False),
        ({"EdgeHubConnectionString": "HostName=h", "EdgeModuleCACertificateFile": "/ca.pem"}, True),
        ({"EdgeHubConnectionString": "HostName=h"}, False),
    ],
)
def test_edge_environment_detection(env: dict[str, str], present: bool) -> None:
    assert edge_environment_present(env) is present


def test_without_edge_environment_the_module_runs_offline_and_says_so_once(caplog) -> None:
    connection = connect_module({})
    assert isinstance(connection, OfflineModuleConnection) and not connection.enabled
    with caplog.at_level(logging.WARNING):
        connection.start()
        connection.start()
    warnings = [r for r in caplog.records if "IoT Hub features are off" in r.getMessage()]
    assert len(warnings) == 1 and "IOTEDGE_DEVICEID" in warnings[0].getMessage()
    connection.send_output("verification", {"ok": True})
    connection.report({"model": {"status": "active"}})
    assert connection.counters["outputs_failed"] == 1
    assert connection.reported == {"model": {"status": "active"}}


def test_method_dispatch_statuses() -> None:
    connection = OfflineModuleConnection()

    def echo(payload):
        if payload == "bad":
            raise MethodError(400, "bad payload")
        if payload == "bug":
            raise KeyError("oops")
        return 200, {"echo": payload}

    connection.on_method("Echo", echo)
    assert connection.dispatch_method("Echo", {"a": 1}) == (200, {"echo": {"a": 1}})
    assert connection.dispatch_method("Echo", "bad") == (400, {"error": "bad payload"})
    status, body = connection.dispatch_method("Echo", "bug")
    assert status == 500 and "oops" not in body["error"]
    status, body = connection.dispatch_method("Nope", None)
    assert status == 404 and "Echo" in body["error"]


def test_input_dispatch_counts_bad_messages_and_keeps_going() -> None:
    connection = OfflineModuleConnection()
    seen = []
    connection.on_input("detections", lambda message: seen.append(message.json()))
    connection.dispatch_input(InputMessage("detections", b'{"a": 1}'))
    connection.dispatch_input(InputMessage("detections", b"not json"))
    connection.dispatch_input(InputMessage("elsewhere", b"{}"))
    assert seen == [{"a": 1}]
    assert connection.counters["bad_inputs"] == 2


def test_desired_handlers_all_run_even_when_one_fails() -> None:
    connection = OfflineModuleConnection()
    got = []

    def broken(desired, complete):
        raise RuntimeError("bug")

    connection.on_desired(broken)
    connection.on_desired(lambda desired, complete: got.append((desired, complete)))
    connection.dispatch_desired({"rules": []}, True)
    assert got == [({"rules": []}, True)]


def test_output_bodies_are_json_unless_bytes() -> None:
    assert encode_body({"é": 1}) == ('{"é":1}'.encode(), "application/json")
    assert encode_body(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    with pytest.raises(TypeError):
        encode_body({"x": object()})


def test_shutdown_signal_runs_callbacks_once() -> None:
    shutdown = ShutdownSignal()
    calls = []
    shutdown.on_shutdown(lambda: calls.append("a"))
    assert not shutdown.wait(0.01)
    shutdown.set()
    shutdown.set()
    shutdown.on_shutdown(lambda: calls.append("late"))
    assert shutdown.is_set() and calls == ["a", "late"]
