"""The quick check of saga inputs agrees with jsonschema: it never says yes where jsonschema
says no, and on the schemas it compiles it gives jsonschema's verdict exactly."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from sagas import InputError, parse_flow
from sagas.engine.inputs import validate_input
from sagas.language.schema_check import compile_check

NAMES = st.sampled_from(["a", "b", "n", "sku", "qty"])
NUMBERS = st.one_of(st.integers(-5, 5), st.sampled_from([-1.5, 0.0, 2.0, 2.5]))


def schemas(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    leaf_type = st.sampled_from(["string", "integer", "number", "boolean", "null", "object",
                                 "array"])
    keywords: dict[str, st.SearchStrategy[Any]] = {
        "type": st.one_of(leaf_type, st.lists(leaf_type, min_size=1, max_size=3, unique=True)),
        "minimum": NUMBERS, "maximum": NUMBERS, "exclusiveMinimum": NUMBERS,
        "exclusiveMaximum": NUMBERS,
        "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
        "minItems": st.integers(0, 2), "maxItems": st.integers(0, 2),
        "minProperties": st.integers(0, 2), "maxProperties": st.integers(0, 2),
        "enum": st.lists(st.sampled_from(["x", "y", "1"]), min_size=1, max_size=3),
        "const": st.sampled_from(["x", "y"]),
        "required": st.lists(NAMES, max_size=3, unique=True),
        "additionalProperties": st.booleans(),
        "description": st.just("annotated"),
    }
    if depth > 0:
        keywords["properties"] = st.dictionaries(NAMES, schemas(depth - 1), max_size=3)
        keywords["items"] = schemas(depth - 1)
    return st.fixed_dictionaries({}, optional=keywords)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.sampled_from(["", "x", "y", "abcd", "1"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=8)


def jsonschema_says(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(schemas(), st.data())
def test_the_quick_check_gives_jsonschemas_verdict(schema: dict[str, Any],
                                                     data: st.DataObject) -> None:
    quick = compile_check(schema)
    assert quick is not None, schema  # every schema drawn here is one it compiles
    value = data.draw(JSON, label="any value")
    assert quick(value) == jsonschema_says(schema, value), (schema, value)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(schemas(), st.data())
def test_values_the_schema_allows_pass_the_quick_check(schema: dict[str, Any],
                                                        data: st.DataObject) -> None:
    quick = compile_check(schema)
    assert quick is not None
    try:
        value = data.draw(from_schema(schema), label="a valid value")
    except Exception:  # a schema nothing satisfies, or one the generator cannot draw from
        return
    assert jsonschema_says(schema, value)
    assert quick(value)


@pytest.mark.parametrize("schema", [
    {"type": "string", "format": "email"},
    {"type": "string", "pattern": "^a"},
    {"$ref": "#/$defs/x", "$defs": {"x": {"type": "integer"}}},
    {"anyOf": [{"type": "integer"}]},
    {"properties": {"a": {"type": "integer", "multipleOf": 2}}},
    {"enum": [1, 2]},
    {"additionalProperties": {"type": "integer"}},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"},
    {"type": "integer", "minimum": True},
])
def test_schemas_beyond_it_are_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


def test_inputs_are_still_refused_with_jsonschemas_message() -> None:
    flow = parse_flow("""\
saga: quick_check
version: 1
services: {s: tests.flow_support:TripDesk}
input:
  type: object
  required: [n]
  additionalProperties: false
  properties:
    n: {type: integer, minimum: 0}
steps:
  - {name: a, service: s, action: do, effects: none}
""", source="<test>")
    assert validate_input(flow, {"n": 3}) == {"n": 3}
    with pytest.raises(InputError, match=r"input\.n: -1 is less than the minimum of 0"):
        validate_input(flow, {"n": -1})
    with pytest.raises(InputError, match="'n' is a required property"):
        validate_input(flow, {})
    with pytest.raises(InputError, match="Additional properties"):
        validate_input(flow, {"n": 1, "extra": True})


@pytest.mark.parametrize("keyword", ["minimum", "maximum", "exclusiveMinimum",
                                     "exclusiveMaximum"])
@pytest.mark.parametrize("bound", [0, 2, 2.0, 2.5, -1])
def test_bounds_at_their_edges(keyword: str, bound: float) -> None:
    schema = {"type": "number", keyword: bound}
    quick = compile_check(schema)
    assert quick is not None
    for value in (bound - 1, bound, float(bound), int(bound), bound + 0.5, True, "2"):
        assert quick(value) == jsonschema_says(schema, value), (schema, value)


@pytest.mark.parametrize("keyword, value", [
    ("minLength", "ab"), ("maxLength", "ab"), ("minItems", [1, 2]), ("maxItems", [1, 2]),
    ("minProperties", {"a": 1, "b": 2}), ("maxProperties", {"a": 1, "b": 2})])
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_sizes_at_their_edges(keyword: str, value: Any, limit: int) -> None:
    schema = {keyword: limit}
    quick = compile_check(schema)
    assert quick is not None
    assert quick(value) == jsonschema_says(schema, value), (schema, value)
