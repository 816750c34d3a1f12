"""Desired-property patches: JSON merge patch (RFC 7386) and the patch a service-side replace sends."""

from typing import Any

import pytest

from edgehub_emulator.twins import merge_patch, replacement_patch


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": None, "c": 3}, {"b": 2, "c": 3}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
        ({"a": 1}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}),  # no nulls survive into a new object
        ({}, {"a": {"b": {"c": None}}}, {"a": {"b": {}}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # arrays replace
    ],
)
def test_merge_patch(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1, "b": 2}, {"b": 3}),
        ({"cfg": {"x": 1, "y": {"deep": 1, "keep": 2}}}, {"cfg": {"x": 1, "y": {"keep": 2}}}),
        ({"cfg": {"x": 1}}, {"cfg": {}}),
        ({"cfg": {"x": 1}}, {"cfg": 5}),
        ({"cfg": 5}, {"cfg": {"x": 1}}),
        ({}, {}),
    ],
)
def test_replacement_patch_merged_into_old_gives_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = replacement_patch(old, new)
    assert merge_patch(old, patch) == new
    assert set(new) <= set(patch)  # every property of the new document is in the patch
