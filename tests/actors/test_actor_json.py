"""``actors._json.dumps_compact``: the text and the errors of ``json.dumps`` (compact)."""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors._json import dumps_compact

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def reference(value: Any, default: Any = None) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=default)


@given(JSON)
def test_the_text_is_that_of_json_dumps(value: Any) -> None:
    assert dumps_compact(value) == reference(value)


@pytest.mark.parametrize("bad", [{"x": math.nan}, [math.inf], -math.inf])
def test_nan_and_infinity_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        dumps_compact(bad)


def test_a_value_without_a_json_form_is_a_type_error_unless_default_gives_one() -> None:
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        dumps_compact({"x": object()})
    frozen = {"x": MappingProxyType({"y": 1})}
    assert dumps_compact(frozen, default=dict) == reference(frozen, default=dict) == '{"x":{"y":1}}'


def test_a_circular_structure_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_compact(loop)
