"""A quick yes for the common saga input: a JSON Schema of simple keywords, compiled to checks.

Every saga's input is checked against its flow's schema. ``jsonschema`` does that in about
15 µs for a small object, most of it in its generic machinery; a schema of the keywords most
flows use (``type``, ``properties``, ``required``, ``additionalProperties``, bounds, lengths,
string ``enum``/``const``, ``items``) can be checked by a few Python closures in a fraction of
that. :func:`compile_check` returns such a check, or ``None`` when the schema uses anything
else (formats, patterns, references, combinators, other drafts ...).

The check only ever says "valid" when ``jsonschema`` (draft 2020-12, as the runtime uses it)
would: it answers ``False`` for anything it is not sure of, and the caller then asks
``jsonschema`` for the verdict and its messages. So a bug here could cost time, never let a
bad input through (``tests/test_input_schema_check.py`` checks both against each other).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_check"]

Check = Callable[[Any], bool]

_DRAFT_2020_12 = ("https://json-schema.org/draft/2020-12/schema",
                  "https://json-schema.org/draft/2020-12/schema#")
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment",
                          "deprecated", "readOnly", "writeOnly"})
_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "minimum",
                       "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                       "maxLength", "enum", "const", "items", "minItems", "maxItems",
                       "minProperties", "maxProperties"}) | _ANNOTATIONS


class _Unsupported(Exception):
    """The schema uses something this module does not compile."""


def compile_check(schema: Any) -> Check | None:
    """A function telling whether an input (plain JSON: dicts, lists, str, int, float, bool,
    None) certainly satisfies ``schema``; ``None`` if the schema is beyond it."""
    if not isinstance(schema, Mapping):
        return None
    declared = schema.get("$schema")
    if declared is not None and declared not in _DRAFT_2020_12:
        return None
    top = {key: value for key, value in schema.items() if key != "$schema"}
    try:
        return _compile(top)
    except _Unsupported:
        return None


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _is_integer(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and value.is_integer())


_TYPES: dict[str, Check] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": _is_integer,
}


def _number(value: Any) -> float | int:
    if type(value) not in (int, float):
        raise _Unsupported("a bound that is not a number")
    return value  # type: ignore[no-any-return]


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Unsupported("a length that is not a non-negative integer")
    return value


def _compile(schema: Any) -> Check:
    if schema is True or (isinstance(schema, Mapping) and not schema):
        return lambda value: True
    if not isinstance(schema, Mapping) or not set(schema) <= _KEYWORDS:
        raise _Unsupported("a keyword this module does not compile")
    checks: list[Check] = []

    kind = schema.get("type")
    if kind is not None:
        names = [kind] if isinstance(kind, str) else kind
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n in _TYPES for n in names):
            raise _Unsupported("an unknown type")
        tests = [_TYPES[n] for n in names]
        checks.append(tests[0] if len(tests) == 1 else
                      (lambda v, tests=tests: any(t(v) for t in tests)))

    for key in ("enum", "const"):
        if key in schema:
            allowed = schema[key] if key == "enum" else [schema[key]]
            if not isinstance(allowed, list) or not all(type(a) is str for a in allowed):
                raise _Unsupported("enum or const of other than strings")
            strings = frozenset(allowed)
            checks.append(lambda v, strings=strings: type(v) is str and v in strings)

    bounds = [(key, _number(schema[key])) for key in
              ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if key in schema]
    if bounds:
        def within(value: Any, bounds: list[tuple[str, float | int]] = bounds) -> bool:
            if not _is_number(value):
                return True
            for key, bound in bounds:
                if key == "minimum" and not value >= bound:
                    return False
                if key == "maximum" and not value <= bound:
                    return False
                if key == "exclusiveMinimum" and not value > bound:
                    return False
                if key == "exclusiveMaximum" and not value < bound:
                    return False
            return True
        checks.append(within)

    for key, wanted, low in (("minLength", str, True), ("maxLength", str, False),
                             ("minItems", list, True), ("maxItems", list, False),
                             ("minProperties", dict, True), ("maxProperties", dict, False)):
        if key in schema:
            limit = _count(schema[key])
            checks.append(
                (lambda v, wanted=wanted, limit=limit: type(v) is not wanted or len(v) >= limit)
                if low else
                (lambda v, wanted=wanted, limit=limit: type(v) is not wanted or len(v) <= limit))

    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise _Unsupported("properties that are not an object")
    compiled = {name: _compile(sub) for name, sub in properties.items()}
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _Unsupported("required that is not a list of names")
    extra = schema.get("additionalProperties", True)
    if extra is not True and extra is not False:
        raise _Unsupported("additionalProperties with a schema")
    if compiled or required or extra is False:
        def object_ok(value: Any, compiled: dict[str, Check] = compiled,
                      required: list[str] = required, closed: bool = extra is False) -> bool:
            if type(value) is not dict:
                return True
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                check = compiled.get(name)
                if check is None:
                    if closed:
                        return False
                elif not check(item):
                    return False
            return True
        checks.append(object_ok)

    if "items" in schema:
        item_check = _compile(schema["items"])
        checks.append(lambda v, item_check=item_check:
                      type(v) is not list or all(item_check(item) for item in v))

    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    return lambda value, checks=tuple(checks): all(check(value) for check in checks)
