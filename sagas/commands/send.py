"""``saga send``: record an external event for the saga that waits (or will wait) for it.

The event is kept in the store until a saga's ``wait_for`` step consumes it, so it may be sent
before the saga gets there, and from any process: the one driving the saga picks it up.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from ..errors import InputError
from ..stores import ExternalEvent
from .errors import UsageProblem
from .inputs import parse_json, read_text
from .session import store_session

__all__ = ["Sent", "event_data", "send_event"]


class Sent(NamedTuple):
    """The event as the store holds it; ``recorded`` is false when one with its id was sent
    before (nothing was written)."""

    event: ExternalEvent
    recorded: bool

    def to_json(self) -> dict[str, Any]:
        """``{"event_id", "event", "key", "recorded", "position"}``."""
        return {"event_id": self.event.event_id, "event": self.event.type,
                "key": self.event.key, "recorded": self.recorded,
                "position": self.event.position}


def event_data(data_json: str | None, data_file: str | None) -> dict[str, Any]:
    """The event's data, given as JSON text or in a file (``-``: standard input), at most
    one of them (none: ``{}``); it must be a JSON object."""
    if data_json is not None and data_file is not None:
        raise UsageProblem("give the event's data with one of --data or --data-file")
    if data_file is not None:
        data = parse_json(read_text(data_file, "--data-file"), f"--data-file {data_file}")
    else:
        data = parse_json(data_json, "--data") if data_json is not None else {}
    if not isinstance(data, dict):
        raise InputError(f"the event's data must be a JSON object, got {type(data).__name__}")
    return data


def send_event(store_url: str, event: str, key: str, data: dict[str, Any], *,
               event_id: str | None = None) -> Sent:
    """Record ``event`` with correlation ``key`` and ``data`` in the store at ``store_url``
    (created if missing). The same ``event_id`` twice records it once. ``InputError`` for a
    malformed event."""
    with store_session(store_url, create=True) as store:
        try:
            recorded, created = store.send_event(event, key, data, event_id=event_id,
                                                 sent_at=time.time())
        except (ValueError, TypeError) as exc:
            raise InputError(str(exc)) from None
    return Sent(recorded, created)
