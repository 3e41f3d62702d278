"""``Service``, ``@handles`` and ``Rejected``: handler tables, checked where they are written."""

from __future__ import annotations

import functools

import pytest

from actors import Rejected, Service, ServiceDefinitionError, handles


class Inventory(Service):
    def __init__(self) -> None:
        super().__init__()
        self.stock = {"widget": 3}

    @handles("reserve")
    def reserve(self, command):
        return {"ok": True}

    @handles("release")
    def release_it(self, command):
        return {}

    def helper(self):  # not a handler
        return 1


def test_handler_names_lists_the_commands_handled():
    assert Inventory.handler_names() == frozenset({"reserve", "release"})
    assert Service.handler_names() == frozenset()


def test_handler_returns_the_bound_method():
    service = Inventory()
    handler = service.handler("release")
    assert handler.__self__ is service
    assert handler.__func__ is Inventory.release_it


def test_handler_for_an_unknown_name_is_a_key_error_naming_what_is_handled():
    with pytest.raises(KeyError, match="release, reserve"):
        Inventory().handler("ship")


def test_snapshot_defaults_to_none():
    assert Inventory().snapshot() is None


def test_subclasses_inherit_and_extend_handlers():
    class Bigger(Inventory):
        @handles("restock")
        def restock(self, command):
            return {}

    assert Bigger.handler_names() == {"reserve", "release", "restock"}
    assert Inventory.handler_names() == {"reserve", "release"}


def test_a_subclass_may_override_a_handler_with_the_decorator():
    class Strict(Inventory):
        @handles("reserve")
        def reserve(self, command):
            return {"strict": True}

    assert Strict().handler("reserve")(None) == {"strict": True}


def test_a_subclass_may_move_a_handler_to_another_method():
    class Moved(Inventory):
        @handles("reserve")
        def reserve_v2(self, command):
            return {"v": 2}

    assert Moved().handler("reserve")(None) == {"v": 2}


def test_overriding_a_handler_without_the_decorator_is_an_error():
    with pytest.raises(ServiceDefinitionError, match=r"overrides .* without @handles\('reserve'\)"):

        class Sloppy(Inventory):
            def reserve(self, command):
                return {}


def test_two_methods_handling_one_name_is_an_error():
    with pytest.raises(ServiceDefinitionError, match="'a' and 'b' both handle 'x'"):

        class Twice(Service):
            @handles("x")
            def a(self, command):
                return {}

            @handles("x")
            def b(self, command):
                return {}


def test_a_reserved_method_name_is_an_error():
    with pytest.raises(ServiceDefinitionError, match="used by Service"):

        class Clash(Service):
            @handles("lookup")
            def handler(self, command):
                return {}


@pytest.mark.parametrize("name", ["", "Reserve", "1st", "a-b", "a b", "é", "_x", "x\n"])
def test_bad_command_names_are_rejected_with_the_rule(name):
    with pytest.raises(ServiceDefinitionError, match=r"\[a-z\]\[a-z0-9_\]\*"):
        handles(name)


def test_a_name_that_is_not_a_string_is_rejected():
    with pytest.raises(ServiceDefinitionError, match="must be a str"):
        handles(3)  # type: ignore[arg-type]


def test_decorator_used_without_a_name_says_how_to_call_it():
    with pytest.raises(ServiceDefinitionError, match=r"write @handles\('reserve'\)"):

        @handles  # type: ignore[arg-type]
        def reserve(self, command):
            return {}


def test_decorating_a_non_callable_is_rejected():
    with pytest.raises(ServiceDefinitionError, match="must decorate a method"):
        handles("x")(3)


@pytest.mark.parametrize("wrap", [staticmethod, classmethod])
def test_static_and_class_methods_are_rejected(wrap):
    with pytest.raises(ServiceDefinitionError, match="plain method"):
        handles("x")(wrap(lambda *a: {}))


def test_a_partial_is_rejected():
    with pytest.raises(ServiceDefinitionError, match="defined with `def`"):
        handles("x")(functools.partial(print))


def test_async_handlers_are_rejected():
    async def reserve(self, command):
        return {}

    with pytest.raises(ServiceDefinitionError, match="synchronous"):
        handles("x")(reserve)


def test_generator_handlers_are_rejected():
    def reserve(self, command):
        yield {}

    with pytest.raises(ServiceDefinitionError, match="generator"):
        handles("x")(reserve)


@pytest.mark.parametrize(
    "fn",
    [lambda self: {}, lambda self, command, extra: {}, lambda: {}],
    ids=["no-command", "extra-required", "no-self"],
)
def test_a_handler_must_take_self_and_command(fn):
    with pytest.raises(ServiceDefinitionError, match=r"takes \(self, command\)"):
        handles("x")(fn)


def test_one_method_handles_one_command():
    with pytest.raises(ServiceDefinitionError, match="already handles 'b'"):

        @handles("a")
        @handles("b")
        def both(self, command):
            return {}


def test_flexible_signatures_are_accepted():
    class Flexible(Service):
        @handles("x")
        def x(self, command, *args, flag=False, **kwargs):
            return {"flag": flag}

    assert Flexible().handler("x")(None) == {"flag": False}


def test_rejected_carries_its_message():
    assert str(Rejected("insufficient stock")) == "insufficient stock"
    assert Rejected("no").message == "no"
    assert str(Rejected()) == "rejected"
