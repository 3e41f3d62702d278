"""Whatever the text, loading raises nothing but ``FlowError``, positioned in the text.

Arbitrary text and bytes, YAML-ish token soup, arbitrary YAML documents and flow-shaped
documents with random keys and values (hypothesis), and hand-picked ones: ``parse_flow`` either
returns a flow or raises ``FlowError`` whose every error has a line and column inside the
document (1:1 for an empty one). Each property tries ``FUZZ_EXAMPLES`` texts: 2,000 in CI
(``CI`` set), 40 locally.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sagas.errors import FlowError
from sagas.language.loader import load_flow, parse_flow

# the acceptance floor: at least 2,000 examples per fuzz property in CI
FUZZ_EXAMPLES = 2000 if os.environ.get("CI") else 40
FUZZ = settings(max_examples=FUZZ_EXAMPLES)

SOURCE = "fuzz.yaml"
# YAML's line breaks; column counts restart after each
_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")

BOMB = "saga: demo\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(7)
).replace("*a", "x")


def check(text: str, source: str = SOURCE) -> None:
    """Load ``text``; the only acceptable failure is a well-positioned FlowError."""
    try:
        parse_flow(text, source=source)
    except FlowError as exc:
        check_positions(exc, text, source)


def check_positions(exc: FlowError, text: str, source: str) -> None:
    lines = _BREAK.split(text)
    errors = getattr(exc, "errors", [exc])
    assert errors
    for error in errors:
        assert isinstance(error, FlowError)
        assert error.source == source
        assert isinstance(error.line, int) and isinstance(error.column, int)
        assert 1 <= error.line <= len(lines), (error.format(), len(lines))
        assert 1 <= error.column <= len(lines[error.line - 1]) + 1, (
            error.format(), lines[error.line - 1])
        assert error.message and "\n" not in error.message
    if not text:
        assert [(e.line, e.column) for e in errors] == [(1, 1)]


# -- arbitrary text ---------------------------------------------------------------------------
TOKENS = [
    "saga", "services", "steps", "name", "service", "action", "compensation", "pivot", "input",
    "retry", "attempts", "timeout", "deadline", "effects", "defaults", "instances", "class",
    "on_compensation_failure", "version", "description", "max_backoff", "backoff", "jitter",
    ":", ": ", " ", "  ", "\n", "\n  ", "\n    ", "- ", "-", "[", "]", "{", "}", ",", "?", "? ",
    "&a ", "*a", "&b ", "*b", "<<: ", "!!python/object:os.system ", "!!python/name:os.system",
    "!!binary ", "!!set ", "!!omap ", "!!str ", "!!int ", "!!float ", "!!timestamp ", "!custom ",
    "!<tag:yaml.org,2002:str> ", "'", "''", '"', '\\"', "\\x", "#", " # c", "---", "...", "|",
    ">", "|-", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "\r", "\r\n", "\x00", "\x07",
    "\x85", "\u2028", "\ufeff", "é", "ß", "漢", "🙂", "0", "1", "-1", "0x1F", "1e400", ".nan",
    ".inf", "~", "null", "true", "yes", "no", "2001-13-45", "250ms", "5s", "2m", "1h", "-5s",
    "$.input.x", "$.steps.a.b", "$.steps", "$.", "$.x..y", "flows.shop:Inventory", "a",
    "9" * 30, "park", "retry_forever", "none",
]


@FUZZ
@given(st.text())
@example("")
@example("\ud800")
@example("saga: demo\x00")
@example("\x07")
@example("[" * 5000)
@example("{" * 1000)
@example("- " * 3000)
@example("".join("  " * i + "-\n" for i in range(400)))
@example("&a [*a]")
@example(BOMB)
@example("saga: demo\rservices: 3\r")
@example("%YAML 9.9\n---\nsaga: demo\n")
@example("---\n---\n")
@example("\ufeff")
def test_arbitrary_text(text: str) -> None:
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=60).map("".join))
def test_yaml_token_soup(text: str) -> None:
    check(text)


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xfe")
@example(b"saga: demo\n\xc3")
@example(b"\xef\xbb\xbfsaga: demo\n")
def test_arbitrary_bytes_in_a_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.yaml"
        path.write_bytes(data)
        try:
            load_flow(path)
        except FlowError as exc:
            text = data.decode("utf-8", errors="replace")
            # positions of undecodable bytes are counted in bytes: bound by the raw length
            errors = getattr(exc, "errors", [exc])
            for error in errors:
                assert error.source == str(path)
                assert 1 <= error.line <= len(_BREAK.split(text)), error.format()
                assert 1 <= error.column <= len(data) + 1, error.format()


# -- YAML documents -----------------------------------------------------------------------------
scalar_values = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["250ms", "5s", "2m", "1h", "-1s", "0", "soon", "$.input.x", "$.steps",
                       "$.steps.a.b", "$.nope.x", "$input", "flows.shop:Inventory", "bad path:",
                       "a", "b", "park", "retry_forever", "none", "true", "object", "strng"])
)
keys = st.sampled_from(TOKENS[:23]) | st.text(max_size=10)
documents = st.recursive(
    scalar_values,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=40,
)

names = st.sampled_from(["a", "b", "c", "reserve", "charge", "Bad-Name", "", "a", "1x"])
retry = st.fixed_dictionaries({}, optional={
    "attempts": st.integers(-2, 6) | scalar_values,
    "backoff": st.sampled_from(["10ms", "1s", 0.5, -1, "x"]),
    "multiplier": st.sampled_from([1, 2, 0.5, "x", 1.5]),
    "max_backoff": st.sampled_from(["1s", None, "none", -1, "x"]),
    "jitter": st.booleans() | scalar_values,
    "atempts": scalar_values,
})
step = st.fixed_dictionaries({}, optional={
    "name": names | scalar_values,
    "service": names | scalar_values,
    "action": names | scalar_values,
    "compensation": names | scalar_values,
    "input": st.dictionaries(st.text(max_size=5), documents, max_size=3) | scalar_values,
    "retry": retry | scalar_values,
    "timeout": scalar_values,
    "pivot": st.booleans() | scalar_values,
    "effects": st.sampled_from(["none", None, "some"]) | scalar_values,
    "on_compensation_failure": st.sampled_from(["park", "retry_forever", "parc"]),
    "extra": documents,
})
flows = st.fixed_dictionaries({}, optional={
    "saga": names | scalar_values,
    "version": st.integers(-1, 3) | scalar_values,
    "description": scalar_values,
    "services": st.dictionaries(
        names, st.sampled_from(["flows.shop:Inventory", "x", "a.b:C"])
        | st.fixed_dictionaries({}, optional={"class": scalar_values,
                                              "instances": st.integers(-1, 3) | scalar_values}),
        max_size=4) | scalar_values,
    "input": st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["object", "strng", 3]),
        "required": st.lists(st.text(max_size=3), max_size=3) | scalar_values,
        "properties": st.dictionaries(st.text(max_size=3), documents, max_size=3)}) | documents,
    "defaults": st.fixed_dictionaries({}, optional={
        "retry": retry, "timeout": scalar_values,
        "on_compensation_failure": scalar_values}) | documents,
    "deadline": scalar_values,
    "steps": st.lists(step, max_size=5) | documents,
    "stepz": documents,
})
dump_options = st.fixed_dictionaries({
    "default_flow_style": st.sampled_from([False, True, None]),
    "allow_unicode": st.booleans(),
    "width": st.sampled_from([20, 80, 1000]),
    "indent": st.sampled_from([2, 4]),
    "explicit_start": st.booleans(),
})


@FUZZ
@given(documents, dump_options)
def test_arbitrary_yaml_documents(document: object, options: dict) -> None:
    check(yaml.safe_dump(document, sort_keys=False, **options))


@FUZZ
@given(flows, dump_options)
def test_flow_shaped_documents(document: dict, options: dict) -> None:
    check(yaml.safe_dump(document, sort_keys=False, **options))


@pytest.mark.parametrize("text", [
    "saga: demo\n" * 2,
    "services:\n  a: x\n  a: y\n" * 2,
    "steps:\n" + "  - {name: a, service: s, action: x}\n" * 50,
    "saga: &x demo\nservices: *x\nsteps: *x\n",
    "? [a, b]\n: c\n? {a: 1}\n: d\n",
])
def test_handpicked_documents(text: str) -> None:
    check(text)
