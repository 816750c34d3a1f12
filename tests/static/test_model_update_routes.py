"""Both deployment templates route the classifier's model-activation messages upstream and keep its model store on
a volume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SOLUTION = Path(__file__).resolve().parents[2] / "iot-edge-solution"


@pytest.mark.parametrize("template", ["deployment.template.json", "deployment.debug.template.json"])
def test_dl_model_output_goes_upstream_and_the_store_is_a_volume(template: str) -> None:
    content = json.loads((SOLUTION / template).read_text(encoding="utf-8"))["modulesContent"]
    routes = content["$edgeHub"]["properties.desired"]["routes"].values()
    texts = [route["route"] if isinstance(route, dict) else route for route in routes]
    assert "FROM /messages/modules/classifier/outputs/DLModelOutput INTO $upstream" in texts
    classifier = content["$edgeAgent"]["properties.desired"]["modules"]["classifier"]
    mounts = classifier["settings"]["createOptions"]["HostConfig"]["Mounts"]
    assert {"Type": "volume", "Source": "classifier-model-store", "Target": "/app/model-store"} in mounts
