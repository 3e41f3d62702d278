"""Conditions of a ``choice``: tests on context paths, combined with ``all``, ``any``, ``not``.

A condition is data, never code (DESIGN.md §2: no eval). In YAML::

    when: {path: $.input.amount, gt: 1000}
    when: {all: [{path: $.input.country, in: [DE, AT]}, {not: {path: $.input.vip, exists: true}}]}

Comparisons (``eq ne gt ge lt le in exists``) read one path. ``eq``/``ne`` compare JSON values;
``gt ge lt le`` hold only when both sides are numbers or both are texts (anything else is
false rather than an error: a saga never fails on a comparison); a path that names nothing
makes every comparison false except ``ne``;
``in`` holds when the value equals one of the listed values; ``exists: true`` holds when the path
names a value (``null`` counts as a value), ``exists: false`` when it names nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .paths import MISSING, parse_path, resolve

__all__ = ["COMBINATORS", "COMPARISONS", "Condition"]

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "exists")
COMBINATORS = ("all", "any", "not")


def _ordered(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` can be ordered: two numbers (not booleans) or two texts."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return not isinstance(a, bool) and not isinstance(b, bool)
    return isinstance(a, str) and isinstance(b, str)


def _same(a: Any, b: Any) -> bool:
    """JSON equality, at every depth: ``1 == 1.0`` but ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, Mapping)) or isinstance(b, (list, tuple, Mapping)):
        return False
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class Condition:
    """One test: ``op`` is a comparison on ``path`` against ``value``, or a combinator over
    ``operands`` (``not`` has exactly one)."""

    op: str
    path: str | None = None
    value: Any = None
    operands: tuple[Condition, ...] = ()

    def holds(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition is true of the saga context."""
        op = self.op
        if op == "all":
            return all(c.holds(context) for c in self.operands)
        if op == "any":
            return any(c.holds(context) for c in self.operands)
        if op == "not":
            return not self.operands[0].holds(context)
        assert self.path is not None
        actual = resolve(context, parse_path(self.path))
        if op == "exists":
            return (actual is not MISSING) == bool(self.value)
        if actual is MISSING:
            return op == "ne"
        if op == "eq":
            return _same(actual, self.value)
        if op == "ne":
            return not _same(actual, self.value)
        if op == "in":
            return any(_same(actual, option) for option in self.value)
        if not _ordered(actual, self.value):
            return False
        if op == "gt":
            return bool(actual > self.value)
        if op == "ge":
            return bool(actual >= self.value)
        if op == "lt":
            return bool(actual < self.value)
        return bool(actual <= self.value)  # le

    def describe(self) -> str:
        """A short text for diagrams and messages: ``$.input.amount > 1000``."""
        symbols = {"eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        if self.op in ("all", "any"):
            joiner = " and " if self.op == "all" else " or "
            return "(" + joiner.join(c.describe() for c in self.operands) + ")"
        if self.op == "not":
            return f"not {self.operands[0].describe()}"
        if self.op == "exists":
            return f"{self.path} exists" if self.value else f"{self.path} missing"
        if self.op == "in":
            return f"{self.path} in {list(self.value)!r}"
        return f"{self.path} {symbols[self.op]} {self.value!r}"
