"""Checks of the port's arguments, shared by the backends: what a subscriber name, a log
position, an owner id, an external event (type, key, id, data, time) and a request are.

Each check raises ``ValueError`` / ``TypeError`` with a one-line message fit for a command-line
user (the facets of :mod:`sagas.stores._port` promise that), before anything is written.
"""

from __future__ import annotations

import builtins
import math
import re
import uuid
from typing import Any

from ._json import encode

__all__ = [
    "EVENT_ID",
    "EVENT_TYPE",
    "MAX_KEY",
    "OWNER_ID",
    "SUBSCRIBER",
    "check_claim",
    "check_event_match",
    "check_owner",
    "check_position",
    "check_subscriber",
    "check_time",
    "external_event_fields",
    "new_event_id",
    "request_json",
]

SUBSCRIBER = re.compile(r"[A-Za-z0-9_.:/-]{1,256}")
"""What a subscriber name (the key of a durable cursor) is: 1 to 256 of ``A-Za-z0-9_.:/-``,
e.g. ``notifications`` or ``flows.shop:Notifications.on_completed``."""


def check_subscriber(name: object) -> str:
    """``name`` if it is a valid subscriber name (:data:`SUBSCRIBER`), else ``TypeError`` /
    ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"a subscriber name is a string, got {_kind(name)}")
    if not SUBSCRIBER.fullmatch(name):
        raise ValueError(
            f"a subscriber name is 1 to 256 of A-Z a-z 0-9 _ . : / -, got {_shown(name)}"
        )
    return name


def check_position(position: object) -> int:
    """``position`` if it is a log position a cursor may hold (an int >= 0), else
    ``TypeError`` / ``ValueError``."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"a log position is an int, got {_kind(position)}")
    if position < 0:
        raise ValueError(f"a log position is >= 0, got {position}")
    return position


EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
"""What an external event's type is: a letter, then up to 127 of ``A-Za-z0-9_.-``."""

EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""What an external event's id is: 1 to 128 of ``A-Za-z0-9_.:-``."""

MAX_KEY = 512
"""The longest correlation key, in characters."""


def _shown(value: object) -> str:
    """``repr(value)``, cut short for an error message of one line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def _kind(value: object) -> str:
    """The name of ``value``'s class, for messages (``type`` is a parameter below)."""
    return builtins.type(value).__name__


def check_event_match(type: str, key: str) -> None:
    """``ValueError`` / ``TypeError`` unless ``type`` is a valid external event type and
    ``key`` a valid correlation key (messages fit for a command-line user)."""
    if not isinstance(type, str):
        raise TypeError(f"an event type is a string, got {_kind(type)}")
    if not EVENT_TYPE.fullmatch(type):
        raise ValueError(
            "an event type is a letter then up to 127 of A-Z a-z 0-9 _ . - "
            f"(e.g. PaymentConfirmed), got {_shown(type)}"
        )
    if not isinstance(key, str):
        raise TypeError(f"an event key is a string, got {_kind(key)}")
    if not key or len(key) > MAX_KEY:
        raise ValueError(
            f"an event key is a non-empty string of at most {MAX_KEY} characters, "
            f"got {_shown(key)}"
        )
    _check_text("an event key", key)


def _check_text(what: str, text: str) -> None:
    """``ValueError`` if ``text`` has no UTF-8 form (a lone surrogate, as undecodable bytes
    of a command line become): SQLite could not store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it has a lone surrogate)") from None


def check_time(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number (of seconds), else ``TypeError`` /
    ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is a number of seconds, got {_kind(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} is a finite number of seconds, got {value!r}")
    return float(value)


def check_claim(type: str, key: str, saga_id: str, at: float) -> float:
    """``at`` as a float if ``claim_event``'s arguments are valid, else ``ValueError`` /
    ``TypeError``."""
    check_event_match(type, key)
    if not isinstance(saga_id, str):
        raise TypeError(f"a saga id is a string, got {_kind(saga_id)}")
    if not saga_id:
        raise ValueError(f"a saga id is a non-empty string, got {_shown(saga_id)}")
    return check_time("at", at)


def external_event_fields(
    type: str, key: str, data: dict[str, Any] | None, event_id: str | None, sent_at: float
) -> tuple[str, str, str, str, float]:
    """What ``send_event`` writes, checked: ``(event_id, type, key, data as JSON text,
    sent_at)``, with a fresh uuid4 hex id when ``event_id`` is ``None``.

    ``ValueError`` / ``TypeError``, with a message fit for a command-line user, for an
    invalid type, key or id, data that is not a JSON object (``None`` means ``{}``; NaN and
    infinity are refused) and a ``sent_at`` that is not a finite number.
    """
    check_event_match(type, key)
    if event_id is None:
        event_id = new_event_id()
    elif not isinstance(event_id, str):
        raise TypeError(f"an event id is a string, got {_kind(event_id)}")
    elif not EVENT_ID.fullmatch(event_id):
        raise ValueError(f"an event id is 1 to 128 of A-Z a-z 0-9 _ . : -, got {_shown(event_id)}")
    if data is None:
        data_json = "{}"
    elif not isinstance(data, dict):
        raise TypeError(f"event data must be a JSON object, got {_kind(data)}")
    else:
        try:
            data_json = encode(data)
        except TypeError as err:
            raise TypeError(f"event data is not JSON: {err}") from err
        except ValueError as err:
            raise ValueError(f"event data is not JSON: {err}") from err
        _check_text("event data", data_json)
    return event_id, type, key, data_json, check_time("sent_at", sent_at)


def new_event_id() -> str:
    """A fresh external event id: a uuid4 in hex."""
    return uuid.uuid4().hex


OWNER_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What an owner id (a runtime's) is: 1 to 128 of ``A-Za-z0-9_.-``."""


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
