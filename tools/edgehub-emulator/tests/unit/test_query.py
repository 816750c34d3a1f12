"""The query subset of deployments: target conditions and metric queries over twin documents, and a clear
BadRequestError for what it does not support."""

from __future__ import annotations

from typing import Any

import pytest

from edgehub_emulator.deployments import merge_layer, system_queries
from edgehub_emulator.errors import BadRequestError
from edgehub_emulator.query import parse_condition, parse_query

DEVICE: dict[str, Any] = {
    "deviceId": "lobby-1",
    "tags": {"site": "lobby", "floor": 2, "ring": "o'clock"},
    "capabilities": {"iotEdge": True},
    "properties": {
        "desired": {"$version": 4},
        "reported": {"lastDesiredVersion": 4, "lastDesiredStatus": {"code": 200}},
    },
    "configurations": {"dep-1": {"status": "Applied"}},
}

CONDITIONS = [
    ("tags.site = 'lobby'", True),
    ("tags.site='garage'", False),
    ("tags.site = 'lobby' AND tags.floor = 2", True),
    ("tags.site = 'garage' OR deviceId = 'lobby-1'", True),
    ("NOT tags.site = 'lobby'", False),
    ("NOT (tags.site = 'garage' OR tags.floor > 3)", True),
    ("tags.floor >= 2 AND tags.floor < 3", True),
    ("tags.missing = 'x'", False),
    ("tags.missing != 'x'", True),
    ("tags.ring = 'o''clock'", True),
    ("capabilities.iotEdge = true", True),
    ("properties.desired.$version = properties.reported.lastDesiredVersion", True),
    ("configurations.[[dep-1]].status = 'Applied'", True),
    ("configurations.[[dep-2]].status = 'Applied'", False),
    ("*", True),
]


@pytest.mark.parametrize(("condition", "expected"), CONDITIONS)
def test_conditions(condition: str, expected: bool) -> None:
    assert parse_condition(condition)(DEVICE) is expected


UNSUPPORTED = [
    ("IS_DEFINED(tags.site)", "functions"),
    ("tags.site = ", "expected"),
    ("tags.site = 'lobby' tags", "unexpected"),
    ("tags.site LIKE 'l%'", "expected op"),
    ("", "non-empty"),
    ('tags.site = "lobby"', "not supported near"),
]


@pytest.mark.parametrize(("condition", "expected"), UNSUPPORTED)
def test_unsupported_conditions_are_bad_requests(condition: str, expected: str) -> None:
    with pytest.raises(BadRequestError, match=expected):
        parse_condition(condition)


def test_queries_select_and_filter() -> None:
    query = parse_query("SELECT deviceId FROM devices WHERE tags.site = 'lobby'")
    assert query.collection == "devices" and query.condition(DEVICE)
    assert query.project(DEVICE) == {"deviceId": "lobby-1"}
    assert parse_query("select * from devices").project(DEVICE) is DEVICE
    for text in system_queries("dep-1", "tags.site='lobby'").values():
        parse_query(text)  # the hub's own metric queries are all in the subset
    with pytest.raises(BadRequestError, match="FROM devices.jobs is not supported"):
        parse_query("SELECT * FROM devices.jobs")
    with pytest.raises(BadRequestError, match="GROUP"):
        parse_query("SELECT * FROM devices GROUP BY tags.site")


def test_layers_merge_paths_on_top_of_the_base() -> None:
    base = {
        "$edgeAgent": {"properties.desired": {"modules": {"a": {"env": {"X": {"value": "1"}}}}}},
        "$edgeHub": {"properties.desired": {"routes": {"r1": "FROM /messages/* INTO $upstream"}}},
        "a": {"properties.desired": {"keep": 1, "nested": {"x": 1}}},
    }
    layer = {
        "$edgeAgent": {"properties.desired.modules.b": {"env": {}}},
        "$edgeHub": {"properties.desired.routes.r2": "FROM /messages/modules/b/* INTO $upstream"},
        "a": {"properties.desired.nested.y": 2},
    }
    merged = merge_layer(base, layer)
    assert set(merged["$edgeAgent"]["properties.desired"]["modules"]) == {"a", "b"}
    assert set(merged["$edgeHub"]["properties.desired"]["routes"]) == {"r1", "r2"}
    assert merged["a"]["properties.desired"] == {"keep": 1, "nested": {"x": 1, "y": 2}}
    assert "b" not in base["$edgeAgent"]["properties.desired"]["modules"]  # the base is not changed
