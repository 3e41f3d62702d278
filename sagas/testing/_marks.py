"""Marks that service code uses: importing them costs nothing (no hypothesis, no harness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["INVARIANT_MARK", "invariant"]

INVARIANT_MARK = "__sagactor_invariant__"


def invariant(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a service method as a business invariant (``def stock_never_negative(self)``).

    ``saga test`` and :func:`~sagas.testing.check_invariants` call it after every run; it must
    raise (``AssertionError`` or anything) when broken.
    """
    setattr(method, INVARIANT_MARK, True)
    return method
