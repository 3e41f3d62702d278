"""Starting sagas from external events: a flow's ``trigger`` (``saga serve``, ``add_trigger``).

A flow that declares ``trigger: {event: OrderPlaced, id: $.input.order_id}`` is started by
every external event of that type (``saga send OrderPlaced --key o-1 --data '{...}'``): the
event's data becomes the saga input, and the saga id is ``<flow>.<id>``, the id read from that
input. A start is idempotent (DESIGN.md §5: same id, same definition and input return the
existing saga), so an event delivered twice, or two events with the same id and data, start
one saga.

Which events a flow has seen is a durable cursor in the store (``trigger:<flow>``), saved once
the starts of a page have been committed: after a crash the page is read again and its starts
are no-ops. A new trigger starts at the beginning of the store's events, so events sent while
no process served the flow are not lost. An event that cannot start the flow (its data fails
the input schema, its id is missing or malformed, the id is taken by other input) is logged
and passed over: it can never start this flow, and it stays in the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..bus import RESERVED_PREFIX
from ..errors import IdConflict, InputError, SagactorError
from ..language.compiler import CompiledFlow
from ..language.paths import MISSING, parse_path, resolve

if TYPE_CHECKING:
    from typing import Protocol

    from ..stores import Cursors, ExternalEvents

    class _TriggerStore(ExternalEvents, Cursors, Protocol):
        """The store's facets a trigger uses: external events, and a cursor in them."""

__all__ = ["CURSOR_PREFIX", "TriggerStarter", "trigger_saga_id"]

log = logging.getLogger(__name__)

PAGE = 500
CURSOR_PREFIX = RESERVED_PREFIX
"""The cursors of triggers are named ``trigger:<flow>``; the event bus refuses subscriber
names with that prefix, so the two never move each other's cursor."""


def trigger_saga_id(compiled: CompiledFlow, data: Any) -> str:
    """The id of the saga an event with ``data`` starts: ``<flow>.<id>``. ``InputError``
    when the data has no usable id (the id must be a text or a whole number)."""
    trigger = compiled.flow.trigger
    assert trigger is not None
    value = resolve({"input": data}, parse_path(trigger.id))
    if value is MISSING or value is None or isinstance(value, bool) or \
            not isinstance(value, (str, int)):
        raise InputError(f"the event's data has no id at {trigger.id} (a text or a whole "
                            f"number), got {'nothing' if value is MISSING else repr(value)}")
    return f"{compiled.flow.name}.{value}"


class TriggerStarter:
    """Reads the store's external events for the flows registered with :meth:`add` and starts
    a saga for each event of their trigger's type. Driven by one thread (a runtime's poller).

    ``start(compiled, input, saga_id)`` starts one saga and returns something with
    ``result(timeout)`` that raises if the start was refused (``Runtime.submit``).
    """

    def __init__(self, store: _TriggerStore,
                 start: Callable[[CompiledFlow, Any, str], Any]) -> None:
        self.store = store
        self._start = start
        self._flows: dict[str, CompiledFlow] = {}
        self._on_start: dict[str, Callable[[str], None] | None] = {}
        self._on_skip: dict[str, Callable[[str, str], None] | None] = {}
        self._positions: dict[str, int] = {}  # each flow's cursor, read from the store once

    def add(self, compiled: CompiledFlow, on_start: Callable[[str], None] | None = None,
            on_skip: Callable[[str, str], None] | None = None) -> None:
        """Serve ``compiled``'s trigger; ``on_start(saga_id)`` is called for each saga started
        (or found started already) for one of its events, ``on_skip(event_id, why)`` for each
        of its events that can start no saga (it is logged, and passed over)."""
        flow = compiled.flow
        if flow.trigger is None:
            raise SagactorError(f"flow {flow.name!r} has no trigger: add "
                                "`trigger: {event: <EventType>, id: $.input.<field>}`")
        self._flows[flow.name] = compiled
        self._on_start[flow.name] = on_start
        self._on_skip[flow.name] = on_skip

    def _skipped(self, name: str, event: Any, why: Exception) -> None:
        log.warning("trigger of %s: event %s (%s) starts no saga: %s", name, event.event_id,
                    event.type, why)
        callback = self._on_skip.get(name)
        if callback is not None:
            try:
                callback(event.event_id, str(why))
            except Exception:
                log.exception("trigger of %s: on_skip callback failed", name)

    @property
    def active(self) -> bool:
        return bool(self._flows)

    def poll(self, timeout: float = 30.0) -> int:
        """Start the sagas of every event sent since each flow's cursor; how many events were
        read. Raises on a store failure (the cursor then stays where it was)."""
        read = 0
        for name, compiled in list(self._flows.items()):
            read += self._poll_flow(name, compiled, timeout)
        return read

    def _poll_flow(self, name: str, compiled: CompiledFlow, timeout: float) -> int:
        trigger = compiled.flow.trigger
        assert trigger is not None
        cursor_name = f"{CURSOR_PREFIX}{name}"
        position = self._positions.get(name)
        if position is None:  # this starter is the cursor's only writer from then on
            position = self._positions[name] = self.store.cursor(cursor_name) or 0
        events = self.store.events_after(position, PAGE)
        if not events:
            return 0
        pending = []
        for event in events:
            if event.type != trigger.event:
                continue
            try:
                saga_id = trigger_saga_id(compiled, dict(event.data))
                pending.append((event, saga_id, self._start(compiled, dict(event.data),
                                                             saga_id)))
            except InputError as exc:  # bad data or id: it can never start this flow
                self._skipped(name, event, exc)
        for event, saga_id, submitted in pending:
            try:
                submitted.result(timeout)
            except IdConflict as exc:  # the id is taken by a saga of other input
                # (a store failure or a time-out raises: the cursor stays, the page is
                # read again)
                self._skipped(name, event, exc)
                continue
            callback = self._on_start.get(name)
            if callback is not None:
                try:
                    callback(saga_id)
                except Exception:
                    log.exception("trigger of %s: on_start callback failed", name)
        self.store.save_cursor(cursor_name, events[-1].position)
        self._positions[name] = events[-1].position
        return len(events)
