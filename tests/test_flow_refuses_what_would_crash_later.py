"""Values that passed validation and then crashed a run are refused at load, each in one line.

The ones found: ``instances: 100000`` (a thread per instance: "can't start new thread"), an
input schema whose ``$ref`` resolves nowhere (``run`` died with
``_WrappedReferencingError``), a 5,000-digit ``version`` (Python's advice about
``sys.set_int_max_str_digits()``), and their relatives: whole numbers too large for a store or
for Python's int-to-text, NaN or infinite multipliers, backoff that overflows to an infinite
time, ``$ref`` loops and schemas too deep for the validator, remote ``$ref``s a run would fetch.
"""

from __future__ import annotations

import math

import pytest

from sagas.engine.inputs import validate_input
from sagas.errors import FlowErrors, InputError
from sagas.language.loader import parse_flow
from sagas.language.model import MAX_DURATION

FLOW = """\
saga: demo
version: VERSION
services:
  inventory: SERVICE
input: SCHEMA
steps:
  - name: reserve
    service: inventory
    action: reserve
    effects: none
    retry: RETRY
    input: {sku: PAYLOAD}
"""
DEFAULTS = {"VERSION": "1", "SERVICE": "flows.shop:Inventory", "SCHEMA": "{type: object}",
            "RETRY": "{attempts: 3}", "PAYLOAD": "$.input.sku"}


def flow(**parts: str) -> str:
    text = FLOW
    for key, default in DEFAULTS.items():
        text = text.replace(key, parts.get(key.lower(), default))
    return text


def errors(text: str) -> list[str]:
    with pytest.raises(FlowErrors) as info:
        parse_flow(text, source="f.yaml")
    found = [error.format() for error in info.value.errors]
    assert all("\n" not in line and "set_int_max_str_digits" not in line for line in found)
    return found


# -- instances -------------------------------------------------------------------------------
@pytest.mark.parametrize("count", ["100000", "65", "1" + "0" * 40])
def test_instances_are_bounded(count):
    [message] = errors(flow(service=f"{{class: flows.shop:Inventory, instances: {count}}}"))
    assert message.startswith("f.yaml:4:55: ")
    if len(count) < 20:
        assert f"instances must be at most 64, got {count}" in message


def test_sixty_four_instances_are_fine():
    text = flow(service="{class: flows.shop:Inventory, instances: 64}")
    assert parse_flow(text).services["inventory"].instances == 64


# -- whole numbers too large for a store, a JSON reader or Python's int-to-text ---------------
@pytest.mark.parametrize(("part", "value", "position"), [
    ("version", "1" + "0" * 5000, "2:10"),  # decimal: Python refuses to read it
    ("version", "0x" + "f" * 5000, "2:10"),  # hex: read, then refused by str() later
    ("payload", "0x" + "f" * 4000, "12:18"),  # ... by json.dumps() when the step starts
    ("retry", "{attempts: 1" + "0" * 2000 + "}", "11:23"),
])
def test_whole_numbers_too_long_to_read_are_one_positioned_line(part, value, position):
    [message] = errors(flow(**{part: value}))
    assert message.startswith(f"f.yaml:{position}: whole number too large for ")
    assert message.endswith("characters); a flow's whole numbers have at most 1000 digits")


@pytest.mark.parametrize(("part", "value", "position", "fragment"), [
    ("version", "9223372036854775808", "2:10",  # 2^63: over SQLite's INTEGER
     "version must be at most 9223372036854775807, got 9223372036854775808"),
    ("version", "1:2:3:4:5:6:7:8:9:10:11:12:13:14:15", "2:10",  # YAML 1.1's base 60
     "version must be at most 9223372036854775807, got 8104308840723929905199655"),
    ("retry", "{attempts: 123456789012345678901234567890}", "11:23",
     "attempts must be at most 10000, got 123456789012345678901234567890"),
    ("retry", "{multiplier: " + "9" * 400 + "}", "11:25",  # too large for a float
     "multiplier must be at most 1000, got 99999999999999999999... (400 digits)"),
])
def test_whole_numbers_over_a_fields_bound_are_refused(part, value, position, fragment):
    [message] = errors(flow(**{part: value}))
    assert message.startswith(f"f.yaml:{position}: {fragment}")


def test_the_largest_whole_numbers_are_fine():
    assert parse_flow(flow(version="9223372036854775807")).version == 2**63 - 1
    loaded = parse_flow(flow(payload=str(2**64)))  # JSON holds it: an input may carry it
    assert loaded.steps[0].input["sku"] == 2**64


# -- retry policies --------------------------------------------------------------------------
@pytest.mark.parametrize(("retry", "fragment"), [
    ("{attempts: 10001}", "attempts must be at most 10000, got 10001"),
    ("{multiplier: .nan}", "multiplier must be a finite number, got a number (nan)"),
    ("{multiplier: .inf}", "multiplier must be a finite number, got a number (inf)"),
    ("{multiplier: 1.0e+999}", "multiplier must be a finite number, got a number (inf)"),
    ("{multiplier: 1000000}", "multiplier must be at most 1000, got 1000000"),
])
def test_retry_numbers_are_bounded(retry, fragment):
    [message] = errors(flow(retry=retry))
    assert message.startswith("f.yaml:11:") and fragment in message


def test_backoff_never_grows_to_an_infinite_time():
    # 1000^63 seconds overflowed to inf: a timer at an infinite time, refused by the store
    text = flow(retry="{attempts: 100, backoff: 1s, multiplier: 1000, jitter: false}")
    policy = parse_flow(text).steps[0].retry
    assert all(math.isfinite(policy.delay(a)) for a in range(1, 101))
    assert policy.delay(64) == MAX_DURATION
    assert math.isfinite(policy.worst_case(5.0))


@pytest.mark.timeout(30)
def test_the_worst_case_of_many_slowly_growing_retries_is_computed_at_once():
    # each step's worst case added 10,000 delays one by one, growing too slowly to stop early
    steps = "".join(f"  - {{name: s{i}, service: inventory, action: reserve, effects: none, "
                    f"retry: {{attempts: 10000, multiplier: 1.00000{i % 10}1}}}}\n"
                    for i in range(3_000))
    text = "saga: demo\nservices:\n  inventory: flows.shop:Inventory\ndeadline: 1h\nsteps:\n"
    loaded = parse_flow(text + steps)
    assert "shorter than the worst case" in loaded.warnings[0].message


# -- input schemas: $ref resolved offline, no loops, not too large -----------------------------
SCHEMAS_THAT_WORK = {
    "local": "{type: object, properties: {sku: {$ref: '#/$defs/sku'}}, "
             "$defs: {sku: {type: string}}}",
    "recursive": "{type: object, properties: {sku: {type: string}, next: {$ref: '#'}}}",
    "anchor": "{properties: {sku: {$ref: '#s'}}, $defs: {s: {$anchor: s, type: string}}}",
    "embedded": "{$id: 'https://example.com/in.json', properties: {sku: {$ref: 'sku.json'}}, "
                "$defs: {s: {$id: 'sku.json', type: string}}}",
    "draft7": "{$schema: 'http://json-schema.org/draft-07/schema#', "
              "properties: {sku: {$ref: '#/definitions/s'}}, definitions: {s: {type: string}}}",
    "metaschema": "{properties: {schema: {$ref: 'https://json-schema.org/draft/2020-12/schema'}}}",
    "not-schemas": "{properties: {$ref: {type: string}}, examples: [{$ref: 'x.json'}], "
                   "x-note: {$ref: 'https://example.com/doc'}}",  # a name, a value, unknown
}


@pytest.mark.parametrize("schema", SCHEMAS_THAT_WORK.values(), ids=SCHEMAS_THAT_WORK)
def test_refs_into_the_schema_load_and_validate_inputs(schema):
    loaded = parse_flow(flow(schema=schema))
    assert validate_input(loaded, {"sku": "a", "next": {"sku": "b"}})["sku"] == "a"
    with pytest.raises(InputError):
        validate_input(loaded, {"sku": 3, "next": {"sku": 4}, "schema": 5, "$ref": 5})


@pytest.mark.parametrize(("schema", "position", "fragment"), [
    ("{properties: {sku: {$ref: '#/$defs/sku'}}}", "5:34",
     "$ref '#/$defs/sku' points to nothing in the schema"),
    ("{properties: {sku: {$ref: '#nowhere'}}}", "5:34",
     "$ref '#nowhere' points to nothing in the schema"),
    ("{properties: {sku: {$ref: 'https://example.com/sku.json'}}}", "5:34",
     "$ref 'https://example.com/sku.json' points outside the schema"),
    ("{properties: {sku: {$ref: 'file:///etc/passwd'}}}", "5:34",
     "$ref 'file:///etc/passwd' points outside the schema"),
    ("{properties: {sku: {$ref: 'sku.json#/s'}}}", "5:34",
     "$ref 'sku.json#/s' points outside the schema"),
    ("{$dynamicRef: '#meta'}", "5:22", "$dynamicRef '#meta' points to nothing"),
    ("{$schema: 'http://json-schema.org/draft-07/schema#', "
     "properties: {sku: {$ref: '#/definitions/s'}}}", "5:86",
     "$ref '#/definitions/s' points to nothing"),
])
def test_refs_that_do_not_resolve_offline_are_errors_at_the_ref(schema, position, fragment):
    [message] = errors(flow(schema=schema))
    assert message.startswith(f"f.yaml:{position}: input schema: {fragment}")


@pytest.mark.parametrize(("schema", "position"), [
    ("{$ref: '#'}", "5:15"),
    ("{properties: {sku: {$ref: '#/$defs/a'}}, $defs: {a: {$ref: '#/$defs/b'}, "
     "b: {anyOf: [{type: string}, {$ref: '#/$defs/a'}]}}}", "5:116"),
    ("{allOf: [{not: {$ref: '#'}}]}", "5:30"),
])
def test_a_loop_of_refs_that_checks_nothing_is_an_error(schema, position):
    # validating any input against it recursed until RecursionError
    [message] = errors(flow(schema=schema))
    assert message.startswith(f"f.yaml:{position}: input schema: $ref ")
    assert "validating an input would never end" in message


def test_an_invalid_regex_in_the_schema_is_an_error():
    # it passed the metaschema (formats unchecked), then every run raised re.error
    [message] = errors(flow(schema="{properties: {sku: {type: string, pattern: '(unclosed'}}}"))
    assert message == "f.yaml:5:51: input schema: '(unclosed' is not a 'regex'"


@pytest.mark.parametrize("levels", [40, 90])
def test_a_schema_too_deep_for_the_validator_is_one_error(levels):
    # 90 levels reached RecursionError while checking the schema itself
    schema = "{type: string}"
    for _ in range(levels):
        schema = f"{{allOf: [{schema}]}}"
    [message] = errors(flow(schema=schema))
    assert message.startswith("f.yaml:5:8: input schema: too large for a saga's input")
    assert f"{2 * levels + 1} deep)" in message


def test_a_schema_with_too_many_values_is_one_error():
    # checking a schema against its metaschema costs ~0.3 ms a value: 4 MB of them, minutes
    properties = ", ".join(f"p{i}: {{type: string}}" for i in range(6_000))
    [message] = errors(flow(schema=f"{{properties: {{{properties}}}}}"))
    assert message.startswith("f.yaml:5:8: input schema: too large for a saga's input (at most "
                              "10000 values")
