"""Any exception becomes one line, whatever it does to resist."""

from __future__ import annotations

from actors._errors import describe_exception, safe_repr


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


class ExitingStr(Exception):
    def __str__(self):
        raise SystemExit(3)


def test_type_and_message():
    assert describe_exception(ValueError("boom")) == "ValueError: boom"


def test_no_message_gives_the_type():
    assert describe_exception(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_one_line_always():
    assert describe_exception(ValueError("a\nb\r\n\tc")) == "ValueError: a b c"


def test_long_messages_are_cut():
    text = describe_exception(ValueError("x" * 10_000))
    assert len(text) < 600 and text.endswith("…")


def test_unprintable_exceptions_have_a_fallback():
    assert describe_exception(Unprintable()) == "Unprintable (unprintable exception)"
    assert describe_exception(ExitingStr()) == "ExitingStr (unprintable exception)"


def test_safe_repr_survives_a_hostile_repr():
    class Hostile:
        def __repr__(self):
            raise RuntimeError

    assert safe_repr(Hostile()).startswith("<Hostile")
    assert len(safe_repr("x" * 1000)) < 100
