"""JSON as both backends keep it: compact text, NaN and infinity refused."""

from __future__ import annotations

from typing import Any

from actors import dumps_compact, loads_compact

__all__ = ["decode", "encode"]


def encode(value: Any) -> str:
    """Compact JSON text; ``ValueError`` for NaN or infinity (no JSON value), ``TypeError`` for
    a value with no JSON form."""
    return dumps_compact(value)


def decode(text: str) -> Any:
    """The value of a JSON text, as ``json.loads`` gives it (fast for the stores' own compact
    texts, which recovery decodes by the ten thousand)."""
    return loads_compact(text)
