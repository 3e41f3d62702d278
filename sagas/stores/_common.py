"""Helpers both store backends share: JSON encoding, owner ids, request data."""

from __future__ import annotations

import re
from typing import Any

from actors._json import dumps_compact, loads_compact

__all__ = ["OWNER_ID", "check_owner", "decode", "encode", "request_json"]

def encode(value: Any) -> str:
    """Compact JSON text; ``ValueError`` for NaN or infinity (no JSON value), ``TypeError`` for
    a value with no JSON form."""
    return dumps_compact(value)

def decode(text: str) -> Any:
    """The value of a JSON text, as ``json.loads`` gives it (fast for the stores' own compact
    texts, which recovery decodes by the ten thousand)."""
    return loads_compact(text)


OWNER_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_owner(owner: object) -> str:
    """``owner`` if it is a valid owner id (``[A-Za-z0-9_.-]{1,128}``), else ``ValueError``."""
    if not isinstance(owner, str) or not OWNER_ID.fullmatch(owner):
        raise ValueError(f"an owner id is 1 to 128 of A-Z a-z 0-9 _ . -, got {owner!r}")
    return owner


def request_json(kind: str, data: dict[str, Any] | None) -> str:
    """A request's data as JSON text; ``ValueError`` / ``TypeError`` for a bad kind or data."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a request kind is a non-empty string, got {kind!r}")
    if data is None:
        return "{}"
    if not isinstance(data, dict):
        raise TypeError(f"request data must be a JSON object (a dict), got {type(data).__name__}")
    return encode(data)
