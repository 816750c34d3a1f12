"""The subset of IoT Hub's query language that deployments need: target conditions and metric queries.

Supported: `SELECT * | deviceId[, moduleId] FROM devices | devices.modules [WHERE condition]`, and a bare condition
(a deployment's `targetCondition`). A condition compares paths (`tags.site`, `deviceId`,
`properties.reported.lastDesiredStatus.code`, `configurations.[[id]].status`, `properties.desired.$version`) with
single-quoted strings, numbers, `true`/`false`/`null` or other paths, with `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`,
combined by `AND`, `OR`, `NOT` and parentheses. Anything else (functions, GROUP BY, ...) is a BadRequestError that
says what is not supported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from edgehub_emulator.errors import BadRequestError

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<paren>[(),*])|(?P<path>(?:\[\[[^\]]+\]\]|[$\w-])+(?:\.(?:\[\[[^\]]+\]\]|[$\w-]+))*))"
)
_KEYWORDS = {"AND", "OR", "NOT", "SELECT", "FROM", "WHERE", "TRUE", "FALSE", "NULL"}
Condition = Callable[[dict[str, Any]], bool]
_MISSING = object()


@dataclass(frozen=True)
class Query:
    """A parsed query: what it selects, from which collection, and which documents match."""

    fields: tuple[str, ...]
    collection: str
    condition: Condition

    def project(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The selected fields of a matching document (all of it for `*`)."""
        if self.fields == ("*",):
            return doc
        return {name: resolve_path(doc, name) for name in self.fields}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if not match or match.end() == position:
            raise BadRequestError(f"query syntax not supported near {text[position : position + 30]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "path" and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        tokens.append((kind, value))
        position = match.end()
    return tokens


def resolve_path(doc: Any, path: str) -> Any:
    """The value at a dotted path, `_MISSING` when any part is absent."""
    node = doc
    for part in path.split("."):
        if part.startswith("[[") and part.endswith("]]"):
            part = part[2:-2]
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is _MISSING or right is _MISSING:
        return op in ("!=", "<>") and not (left is _MISSING and right is _MISSING)
    if op == "=":
        return bool(left == right)
    if op in ("!=", "<>"):
        return bool(left != right)
    numbers = (int, float)
    comparable = (isinstance(left, numbers) and isinstance(right, numbers)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable or isinstance(left, bool) or isinstance(right, bool):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _always(_doc: dict[str, Any]) -> bool:
    return True


def _either(left: Condition, right: Condition) -> Condition:
    return lambda doc: left(doc) or right(doc)


def _both(left: Condition, right: Condition) -> Condition:
    return lambda doc: left(doc) and right(doc)


class _Parser:
    """Recursive descent over the tokens: condition := conjunction (OR conjunction)*; conjunction := negation
    (AND negation)*; negation := NOT negation | ( condition ) | operand op operand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        """The next token, or None at the end."""
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        """Consume the next token; BadRequestError when it is not the wanted one."""
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (value and token[1] != value):
            wanted = value or kind or "more"
            found = token[1] if token else "the end"
            raise BadRequestError(f"query {self.text[:200]!r}: expected {wanted}, found {found!r}")
        self.position += 1
        return token

    def at(self, kind: str, value: str | None = None) -> bool:
        """Whether the next token is of that kind (and value)."""
        token = self.peek()
        return token is not None and token[0] == kind and (value is None or token[1] == value)

    def condition(self) -> Condition:
        """condition := conjunction (OR conjunction)*"""
        left = self.conjunction()
        while self.at("keyword", "OR"):
            self.take()
            right = self.conjunction()
            left = _either(left, right)
        return left

    def conjunction(self) -> Condition:
        """conjunction := negation (AND negation)*"""
        left = self.negation()
        while self.at("keyword", "AND"):
            self.take()
            right = self.negation()
            left = _both(left, right)
        return left

    def negation(self) -> Condition:
        """negation := NOT negation | ( condition ) | comparison"""
        if self.at("keyword", "NOT"):
            self.take()
            inner = self.negation()
            return lambda doc: not inner(doc)
        if self.at("paren", "("):
            self.take()
            inner = self.condition()
            self.take("paren", ")")
            return inner
        return self.comparison()

    def operand(self) -> Callable[[dict[str, Any]], Any]:
        """A string, number, constant or property path."""
        kind, value = self.take()
        if kind == "string":
            text = value[1:-1].replace("''", "'")
            return lambda _doc: text
        if kind == "number":
            number = float(value) if "." in value else int(value)
            return lambda _doc: number
        if kind == "keyword" and value in ("TRUE", "FALSE", "NULL"):
            constant = {"TRUE": True, "FALSE": False, "NULL": None}[value]
            return lambda _doc: constant
        if kind == "path":
            if self.at("paren", "("):
                raise BadRequestError(f"query functions such as {value}() are not supported by the emulator")
            return lambda doc: resolve_path(doc, value)
        raise BadRequestError(f"query {self.text[:200]!r}: {value!r} is not a value or a property path")

    def comparison(self) -> Condition:
        """operand op operand"""
        left = self.operand()
        _, op = self.take("op")
        right = self.operand()
        return lambda doc: _compare(op, left(doc), right(doc))


def parse_condition(text: str) -> Condition:
    """A target condition (`tags.site='lobby' AND NOT deviceId='x'`); `*` matches every device."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError("a condition must be a non-empty string")
    if text.strip() == "*":
        return _always
    parser = _Parser(text)
    condition = parser.condition()
    if parser.peek() is not None:
        raise BadRequestError(f"condition {text[:200]!r}: unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return condition


def parse_query(text: str) -> Query:
    """`SELECT ... FROM devices[.modules] [WHERE ...]`."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError("the query must be a non-empty string")
    parser = _Parser(text)
    parser.take("keyword", "SELECT")
    fields = [parser.take()[1]]
    while parser.at("paren", ","):
        parser.take()
        fields.append(parser.take("path")[1])
    if parser.at("paren", "("):
        raise BadRequestError(f"query {text[:200]!r}: functions such as {fields[-1]}() are not supported here")
    if fields != ["*"] and any(not re.fullmatch(r"[$\w.]+", name) for name in fields):
        raise BadRequestError(f"query {text[:200]!r}: only SELECT * or property paths are supported")
    parser.take("keyword", "FROM")
    _, collection = parser.take("path")
    if collection.lower() not in ("devices", "devices.modules"):
        raise BadRequestError(f"query {text[:200]!r}: FROM {collection} is not supported (devices, devices.modules)")
    condition: Condition = _always
    if parser.peek() is not None:
        parser.take("keyword", "WHERE")
        condition = parser.condition()
    if parser.peek() is not None:
        raise BadRequestError(f"query {text[:200]!r}: {parser.peek()[1]!r} is not supported by the emulator")  # type: ignore[index]
    return Query(tuple(fields), collection.lower(), condition)
