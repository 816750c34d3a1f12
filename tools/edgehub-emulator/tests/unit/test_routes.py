"""Route parsing and matching."""

import pytest

from edgehub_emulator.errors import RouteSyntaxError
from edgehub_emulator.routes import Endpoint, parse_route, resolve

IN1 = 'BrokeredEndpoint("/modules/rx/inputs/in1")'


@pytest.mark.parametrize(
    ("text", "module", "output", "props", "expected"),
    [
        (f"FROM /messages/* INTO {IN1}", "tx", "o", {}, True),
        (f"FROM /messages/* INTO {IN1}", None, None, {}, True),
        (f"FROM /messages/modules/tx/* INTO {IN1}", "tx", None, {}, True),
        (f"FROM /messages/modules/tx/* INTO {IN1}", "other", "o", {}, False),
        (f"FROM /messages/modules/tx/outputs/* INTO {IN1}", "tx", "any", {}, True),
        (f"FROM /messages/modules/tx/outputs/o1 INTO {IN1}", "tx", "o2", {}, False),
        (f"FROM /messages/modules/tx/outputs/o1 INTO {IN1}", "tx", "o1", {}, True),
        (f"FROM /messages/* WHERE level = 'high' INTO {IN1}", "tx", "o", {"level": "high"}, True),
        (f"FROM /messages/* WHERE level = 'high' INTO {IN1}", "tx", "o", {"level": "low"}, False),
        (f"FROM /messages/* WHERE level = 'high' INTO {IN1}", "tx", "o", {}, False),
        (
            f"FROM /messages/* WHERE temp > 30 AND NOT (unit <> 'C') INTO {IN1}",
            "tx",
            "o",
            {"temp": "31.5", "unit": "C"},
            True,
        ),
        (
            f"FROM /messages/* WHERE temp > 30 OR IS_DEFINED(alarm) INTO {IN1}",
            "tx",
            "o",
            {"alarm": "1"},
            True,
        ),
        (
            f"FROM /messages/* WHERE $connectionModuleId = 'tx' INTO {IN1}",
            "tx",
            "o",
            {"$connectionModuleId": "tx"},
            True,
        ),
        (f'from /messages/* where a != "b" into {IN1}', "tx", "o", {"a": "c"}, True),
    ],
)
def test_route_matches(
    text: str, module: str | None, output: str | None, props: dict[str, str], expected: bool
) -> None:
    assert parse_route("r", text).matches(module, output, props) is expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("SELECT * INTO $upstream", "is not 'FROM"),
        ("FROM /twinChangeNotifications INTO $upstream", "unsupported source"),
        ("FROM /messages/* INTO BrokeredEndpoint(/modules/a/inputs/b)", "unsupported sink"),
        ("FROM /messages/* INTO $downstream", "unsupported sink"),
        ("FROM /messages/* WHERE a = INTO $upstream", "ends too early"),
        ("FROM /messages/* WHERE a = 'x' AND INTO $upstream", "ends too early"),
        ("FROM /messages/* WHERE $body.x = 1 INTO $upstream", "message body"),
        ("FROM /messages/* WHERE $nope = 1 INTO $upstream", "unknown system property"),
        ("FROM /messages/* WHERE (a = 1 INTO $upstream", "ends too early"),
        ("FROM /messages/* WHERE a ~ 1 INTO $upstream", "unexpected character"),
        ({"route": "FROM /messages/* INTO $upstream", "priority": 12}, "priority"),
        ({"route": "FROM /messages/* INTO $upstream", "timeToLiveSecs": -1}, "timeToLiveSecs"),
        ({"route": "FROM /messages/* INTO $upstream", "bogus": 1}, "unknown fields"),
        (42, "must be a string"),
    ],
)
def test_bad_routes_are_clear_errors(value: object, error: str) -> None:
    with pytest.raises(RouteSyntaxError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_route("r", value)


def test_each_endpoint_gets_a_message_once_with_the_best_priority() -> None:
    routes = [
        parse_route("a", f"FROM /messages/* INTO {IN1}"),
        parse_route("b", {"route": f"FROM /messages/modules/tx/* INTO {IN1}", "priority": 1, "timeToLiveSecs": 5}),
        parse_route("c", "FROM /messages/* INTO $upstream"),
        parse_route("d", "FROM /messages/modules/tx/outputs/o INTO $upstream"),
    ]
    deliveries = resolve(routes, "tx", "o", {})
    assert sorted(str(d.endpoint) for d in deliveries) == ["$upstream", "/modules/rx/inputs/in1"]
    assert Endpoint("rx", "in1") in {d.endpoint for d in deliveries}
