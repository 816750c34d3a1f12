"""`$VAR` placeholders in desired properties and env values expand as `iotedgedev genconfig` expands them."""

from __future__ import annotations

from typing import Any

from edgehub_emulator.manifest import parse_manifest


def _manifest(desired: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": {"modules": {"m": {"env": env}}}},
            "$edgeHub": {"properties.desired": {"routes": {}}},
            "m": {"properties.desired": desired},
        }
    }


def test_desired_values_expand_keys_and_other_types_stay() -> None:
    desired = {
        "model": {"name": "$MODEL_NAME", "version": "${MODEL_VERSION}"},
        "$KEY_STAYS": ["$MODEL_NAME-x", 1, True, None],
        "missing": "$NOT_SET",
    }
    variables = {"MODEL_NAME": "lite0", "MODEL_VERSION": "2", "KEY_STAYS": "no"}
    manifest = parse_manifest(_manifest(desired, {"A": {"value": "$MODEL_NAME"}}), variables=variables)
    assert manifest.desired["m"] == {
        "model": {"name": "lite0", "version": "2"},
        "$KEY_STAYS": ["lite0-x", 1, True, None],
        "missing": "$NOT_SET",
    }
    assert manifest.modules["m"].env == {"A": "lite0"}
