"""Messages are frozen values; ``freeze``/``thaw`` deep-(un)freeze JSON-like data."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from actor_doubles import command
from hypothesis import given
from hypothesis import strategies as st

from actors import Command, Deliver, Fault, Reply, StoredReply, freeze, thaw

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_thaw_inverts_freeze(value):
    assert thaw(freeze(value)) == value


@given(json_values)
def test_frozen_data_has_no_mutable_containers(value):
    def check(obj):
        assert not isinstance(obj, (dict, list, set))
        if isinstance(obj, MappingProxyType):
            for item in obj.values():
                check(item)
        elif isinstance(obj, tuple):
            for item in obj:
                check(item)

    check(freeze(value))


def test_freeze_copies_so_the_original_cannot_change_it():
    original = {"items": [{"sku": "a"}], "n": 1}
    frozen = freeze(original)
    original["items"][0]["sku"] = "changed"
    original["n"] = 2
    assert frozen["items"][0]["sku"] == "a"
    assert frozen["n"] == 1


def test_frozen_data_cannot_be_mutated():
    frozen = freeze({"a": [1, {"b": 2}]})
    with pytest.raises(TypeError):
        frozen["a"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        frozen["a"][1]["b"] = 3  # type: ignore[index]
    assert isinstance(frozen["a"], tuple)


def test_thaw_gives_plain_mutable_copies():
    thawed = thaw(freeze({"a": [1, {"b": 2}]}))
    assert type(thawed) is dict and type(thawed["a"]) is list and type(thawed["a"][1]) is dict
    thawed["a"].append(3)


@pytest.mark.parametrize(
    ("value", "where"),
    [({"a": {1, 2}}, r"\$\.a: a set"), ({"a": [b"x"]}, r"\$\.a\[0\]: a bytes"),
     ({1: "x"}, "key 1 is a int"), (object(), r"\$: a object")],
)  # fmt: skip
def test_freeze_rejects_what_is_not_json_like_and_says_where(value, where):
    with pytest.raises(TypeError, match=where):
        freeze(value)


def test_command_freezes_payload_and_result():
    payload = {"sku": "widget", "lines": [1, 2]}
    cmd = command(payload=payload, phase="compensation", result={"id": "r1"})
    payload["sku"] = "changed"
    assert cmd.payload["sku"] == "widget"
    assert isinstance(cmd.payload, MappingProxyType)
    assert isinstance(cmd.result, MappingProxyType)
    assert cmd.payload["lines"] == (1, 2)


def test_command_keys_and_action_key():
    action = command("s1", "charge")
    compensation = command("s1", "charge", "compensation")
    assert action.key == action.action_key == "s1:charge"
    assert compensation.key == "s1:charge:compensation"
    assert compensation.action_key == "s1:charge"


def test_messages_are_frozen():
    cmd = command()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.attempt = 2  # type: ignore[misc]
    reply = Reply(cmd, "succeeded", {}, None, False, "svc", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.outcome = "error"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Deliver(cmd, None).command = cmd  # type: ignore[arg-type, misc]


def test_commands_compare_by_value():
    assert command(payload={"a": [1]}) == command(payload={"a": [1]})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"phase": "undo"}, ValueError, "phase"), ({"attempt": 0}, ValueError, "attempt"),
     ({"payload": [1]}, TypeError, "payload must be a mapping")],
)  # fmt: skip
def test_command_validates(kwargs, error, match):
    fields = dict(command_id="c", saga_id="s", step="x", phase="action", name="do", attempt=1,
                  key="s:x", payload={})  # fmt: skip
    fields.update(kwargs)
    with pytest.raises(error, match=match):
        Command(**fields)


def test_outcomes_and_fault_kinds_are_validated():
    with pytest.raises(ValueError, match="outcome"):
        Reply(command(), "maybe", None, None, False, "svc", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        StoredReply("timed_out", None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        Fault("explode")  # type: ignore[arg-type]
