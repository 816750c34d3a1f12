"""edgeHub routes: `FROM <source> [WHERE <condition>] INTO <sink>`.

Supported sources: `/*`, `/messages/*`, `/messages/modules/<m>/*`, `/messages/modules/<m>/outputs/*`,
`/messages/modules/<m>/outputs/<o>`. Sinks: `BrokeredEndpoint("/modules/<m>/inputs/<i>")` and `$upstream`.
Conditions: comparisons (`= != <> < > <= >=`) of message properties (application properties by name,
system properties as `$connectionDeviceId`, `$connectionModuleId`, `$outputName`, `$messageId`,
`$correlationId`, `$contentType`, `$contentEncoding`, `$userId`) with string, number, boolean or null literals,
`AND`, `OR`, `NOT`, parentheses and `IS_DEFINED(prop)`. Anything else is a RouteSyntaxError at load time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from edgehub_emulator.errors import RouteSyntaxError

UPSTREAM = "$upstream"

_ROUTE_RE = re.compile(
    r"^\s*FROM\s+(?P<source>\S+)\s+(?:WHERE\s+(?P<cond>.+?)\s+)?INTO\s+(?P<sink>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SOURCE_RE = re.compile(r"^/messages/modules/(?P<module>[^/*]+)/(?:\*|outputs/(?P<output>[^/]+))$")
_SINK_RE = re.compile(
    r"""^BrokeredEndpoint\(\s*(?P<q>["'])/modules/(?P<module>[^/"']+)/inputs/"""
    r"""(?P<input>[^/"']+)(?P=q)\s*\)$""",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")|(?P<num>-?\d+(?:\.\d+)?)|"""
    r"""(?P<op><>|!=|<=|>=|=|<|>)|(?P<paren>[()])|(?P<word>\$?[A-Za-z_][\w.\-]*))"""
)

Condition = Callable[[dict[str, str]], Any]


@dataclass(frozen=True)
class Endpoint:
    """Where a route delivers: a module input or `$upstream` (module and input are empty then)."""

    module: str = ""
    input: str = ""

    @property
    def is_upstream(self) -> bool:
        """True for the `$upstream` sink."""
        return not self.module

    def __str__(self) -> str:
        return UPSTREAM if self.is_upstream else f"/modules/{self.module}/inputs/{self.input}"


@dataclass
class Route:
    """One parsed route with its delivery options."""

    name: str
    text: str
    source_module: str | None  # None: any sender
    source_output: str | None  # None: any output (or none)
    sink: Endpoint
    condition: Condition | None = None
    priority: int = 0
    ttl_secs: int | None = None
    device_messages: bool = field(default=True)

    def matches(self, module_id: str | None, output: str | None, properties: dict[str, str]) -> bool:
        """Whether a message from `module_id` (None: the device itself) on `output` takes this route."""
        if self.source_module is not None:
            if module_id != self.source_module:
                return False
            if self.source_output is not None and output != self.source_output:
                return False
        if self.condition is None:
            return True
        try:
            return self.condition(properties) is True
        except (TypeError, ValueError):
            return False


class _Undefined:
    """A property that is not on the message: every comparison with it is false."""


UNDEFINED = _Undefined()
_SYSTEM = {
    "$connectiondeviceid": "$connectionDeviceId",
    "$connectionmoduleid": "$connectionModuleId",
    "$outputname": "$outputName",
    "$messageid": "$messageId",
    "$correlationid": "$correlationId",
    "$contenttype": "$contentType",
    "$contentencoding": "$contentEncoding",
    "$userid": "$userId",
}
Operand = Union[str, float, bool, None, _Undefined]


def _compare(op: str, left: Operand, right: Operand) -> bool:
    if isinstance(left, _Undefined) or isinstance(right, _Undefined):
        return False
    if isinstance(left, str) and isinstance(right, float):
        left = float(left)
    elif isinstance(right, str) and isinstance(left, float):
        right = float(right)
    if op == "=":
        return left == right
    if op in ("!=", "<>"):
        return left != right
    ordered = {
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    return bool(ordered[op](left, right))


def _either(left: Condition, right: Condition) -> Condition:
    """`left OR right`: only a boolean true counts (undefined operands make a comparison undefined)."""
    return lambda p: left(p) is True or right(p) is True


def _both(left: Condition, right: Condition) -> Condition:
    """`left AND right`."""
    return lambda p: left(p) is True and right(p) is True


class _ConditionParser:
    """Recursive descent over the tokens of a WHERE clause, producing a closure over message properties."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN_RE.match(text, pos)
            if not match or match.end() == pos:
                raise RouteSyntaxError(f"unexpected character at {text[pos:].strip()[:20]!r} in WHERE {text!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise RouteSyntaxError(f"WHERE {self.text!r} ends too early")
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token and token[0] == "word" and token[1].upper() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Condition:
        """The whole clause; trailing tokens are an error."""
        result = self._or()
        if self._peek() is not None:
            raise RouteSyntaxError(f"unexpected {self._peek()[1]!r} in WHERE {self.text!r}")  # type: ignore[index]
        return result

    def _or(self) -> Condition:
        left = self._and()
        while self._keyword("OR"):
            right = self._and()
            left = _either(left, right)
        return left

    def _and(self) -> Condition:
        left = self._not()
        while self._keyword("AND"):
            right = self._not()
            left = _both(left, right)
        return left

    def _not(self) -> Condition:
        if self._keyword("NOT"):
            inner = self._not()
            return lambda p: not inner(p) is True
        return self._comparison()

    def _comparison(self) -> Condition:
        token = self._peek()
        if token == ("paren", "("):
            self.pos += 1
            inner = self._or()
            if self._next() != ("paren", ")"):
                raise RouteSyntaxError(f"missing ')' in WHERE {self.text!r}")
            return inner
        left = self._operand()
        token = self._peek()
        if token is None or token[0] != "op":
            return left  # a bare boolean, e.g. IS_DEFINED(x)
        op = self._next()[1]
        right = self._operand()
        return lambda p: _compare(op, left(p), right(p))

    def _operand(self) -> Condition:
        kind, value = self._next()
        if kind == "str":
            literal = value[1:-1].replace(value[0] * 2, value[0])
            return lambda p: literal
        if kind == "num":
            number = float(value)
            return lambda p: number
        if kind != "word":
            raise RouteSyntaxError(f"expected a property or a literal, got {value!r} in WHERE {self.text!r}")
        upper = value.upper()
        if upper in ("TRUE", "FALSE"):
            flag = upper == "TRUE"
            return lambda p: flag
        if upper == "NULL":
            return lambda p: None
        if upper == "IS_DEFINED":
            if self._next() != ("paren", "("):
                raise RouteSyntaxError(f"IS_DEFINED needs '(' in WHERE {self.text!r}")
            name = self._property_name(self._next())
            if self._next() != ("paren", ")"):
                raise RouteSyntaxError(f"IS_DEFINED needs ')' in WHERE {self.text!r}")
            return lambda p: name in p
        if upper in ("AND", "OR", "NOT"):
            raise RouteSyntaxError(f"unexpected {value!r} in WHERE {self.text!r}")
        name = self._property_name((kind, value))
        return lambda p: p.get(name, UNDEFINED)

    def _property_name(self, token: tuple[str, str]) -> str:
        kind, value = token
        if kind != "word":
            raise RouteSyntaxError(f"expected a property name, got {value!r} in WHERE {self.text!r}")
        if value.lower().startswith("$body"):
            raise RouteSyntaxError(f"conditions on the message body ({value}) are not supported: {self.text!r}")
        if value.startswith("$"):
            if value.lower() not in _SYSTEM:
                raise RouteSyntaxError(f"unknown system property {value!r} in WHERE {self.text!r}")
            return _SYSTEM[value.lower()]
        return value


def parse_condition(text: str) -> Condition:
    """A WHERE clause into a predicate over a property dict."""
    return _ConditionParser(text).parse()


def _route_options(name: str, value: Any, default_ttl_secs: int | None) -> tuple[Any, int, int | None]:
    """The route text, priority and TTL of a string or `{route, priority, timeToLiveSecs}` route."""
    if not isinstance(value, dict):
        return value, 0, default_ttl_secs
    unknown = set(value) - {"route", "priority", "timeToLiveSecs"}
    if unknown:
        raise RouteSyntaxError(f"route {name!r} has unknown fields {sorted(unknown)}")
    priority = value.get("priority", 0)
    ttl = value.get("timeToLiveSecs", default_ttl_secs)
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise RouteSyntaxError(f"route {name!r}: priority must be an integer 0-9, got {priority!r}")
    if ttl is not None and (not isinstance(ttl, int) or ttl < 0):
        raise RouteSyntaxError(f"route {name!r}: timeToLiveSecs must be a non-negative integer")
    return value.get("route"), priority, ttl


def _parse_source(name: str, source: str) -> tuple[str | None, str | None, bool]:
    """(module, output or None for all outputs, whether device messages match) of a route source."""
    if source in ("/*", "/messages/*"):
        return None, None, True
    src = _SOURCE_RE.match(source)
    if not src:
        raise RouteSyntaxError(f"route {name!r}: unsupported source {source!r}")
    output = src.group("output")
    return src.group("module"), None if output == "*" else output, False


def _parse_sink(name: str, sink_text: str) -> Endpoint:
    if sink_text == UPSTREAM:
        return Endpoint()
    sink_match = _SINK_RE.match(sink_text)
    if not sink_match:
        raise RouteSyntaxError(
            f"route {name!r}: unsupported sink {sink_text!r} (use $upstream or "
            'BrokeredEndpoint("/modules/<m>/inputs/<i>"))'
        )
    return Endpoint(sink_match.group("module"), sink_match.group("input"))


def parse_route(name: str, value: Any, default_ttl_secs: int | None = None) -> Route:
    """One manifest route: a string or `{route, priority, timeToLiveSecs}`."""
    text, priority, ttl = _route_options(name, value, default_ttl_secs)
    if not isinstance(text, str):
        raise RouteSyntaxError(f"route {name!r} must be a string or an object with a 'route' string")
    match = _ROUTE_RE.match(text)
    if not match:
        raise RouteSyntaxError(f"route {name!r} is not 'FROM <source> [WHERE <condition>] INTO <sink>': {text!r}")
    source_module, source_output, device_messages = _parse_source(name, match.group("source"))
    sink = _parse_sink(name, match.group("sink").strip())
    cond_text = match.group("cond")
    condition = parse_condition(cond_text) if cond_text else None
    return Route(name, text, source_module, source_output, sink, condition, priority, ttl, device_messages)


@dataclass(frozen=True)
class Delivery:
    """One endpoint a message goes to, with the options of the best (lowest priority number) route."""

    endpoint: Endpoint
    priority: int
    ttl_secs: int | None


def resolve(
    routes: list[Route], module_id: str | None, output: str | None, properties: dict[str, str]
) -> list[Delivery]:
    """Every endpoint the message reaches, once each."""
    best: dict[Endpoint, Route] = {}
    for route in routes:
        if route.matches(module_id, output, properties):
            current = best.get(route.sink)
            if current is None or route.priority < current.priority:
                best[route.sink] = route
    return [Delivery(sink, r.priority, r.ttl_secs) for sink, r in best.items()]
