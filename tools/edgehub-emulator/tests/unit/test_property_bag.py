"""Property bags of events topics parse as IoT Hub parses them, whichever SDK wrote them."""

from __future__ import annotations

import pytest

from edgehub_emulator.messages import parse_properties


@pytest.mark.parametrize(
    ("bag", "custom", "system", "output"),
    [
        # the Node.js SDK ends the bag with '/'
        (
            "%24.mid=m1&%24.on=out1&severity=high&sdk=node/",
            {"severity": "high", "sdk": "node"},
            {"$.mid": "m1"},
            "out1",
        ),
        ("$.on=out1&sdk=node/", {"sdk": "node"}, {}, "out1"),
        ("sdk=node//", {"sdk": "node"}, {}, None),
        # the Python SDK does not; an encoded '/' stays part of the value
        ("$.ct=application%2Fjson&path=a%2F", {"path": "a/"}, {"$.ct": "application/json"}, None),
        ("", {}, {}, None),
        ("/", {}, {}, None),
        ("a=1&&b=2", {"a": "1", "b": "2"}, {}, None),
    ],
)
def test_property_bags(bag: str, custom: dict[str, str], system: dict[str, str], output: str | None) -> None:
    message = parse_properties(bag)
    assert message.custom == custom and message.system == system and message.output == output
