"""JSON from clients, parsed with IoT Hub's limits: bad or too deep documents are a BadRequestError, not a crash."""

from __future__ import annotations

import json
from typing import Any

from edgehub_emulator.errors import BadRequestError

# IoT Hub: objects in twin tags, desired and reported properties nest at most 10 levels deep.
MAX_TWIN_DEPTH = 10
# Anything else (method payloads, messages the service API checks) stops far below Python's recursion limit.
MAX_JSON_DEPTH = 100


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def depth(value: Any) -> int:
    """How deep objects and arrays nest (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings: checked before json.loads, which recurses per level."""
    level = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def parse_json(data: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse `data`; BadRequestError names `what` when it is not UTF-8 JSON, holds NaN/Infinity or nests too deep."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise BadRequestError(f"{what} is not valid JSON: {e}") from e
    if ("[" in text or "{" in text) and _nesting(text) > max_depth:
        raise BadRequestError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise BadRequestError(f"{what} is not valid JSON: {e}") from e


def check_twin_depth(section: dict[str, Any], what: str) -> None:
    """BadRequestError when a twin section nests deeper than IoT Hub allows."""
    if depth(section) - 1 > MAX_TWIN_DEPTH:  # the levels below the section itself
        raise BadRequestError(f"{what} nests deeper than {MAX_TWIN_DEPTH} levels (IoT Hub's twin limit)")
