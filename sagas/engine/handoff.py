"""Starts handed to other members: sagas written to a shared store for the member holding
their partition to drive (a client's starts, or a member's in a partition it does not hold).

The start is what :func:`core.start` decides — ``saga.started`` and the first step's events —
written without its commands, with a ``drive`` request for the holder, which loads the saga
from its log and sends them, as ``saga resume`` re-sends an attempt. Starts queued while one
batch is written go out together in the next: one transaction for all their creates, then a
request each, so a client starting many sagas pays one commit per batch, not per saga.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import IdConflict
from ..stores import NewSaga
from .shard import Ticket, canonical

__all__ = ["DRIVE", "Handoff", "StartHandoff"]

log = logging.getLogger(__name__)

DRIVE = "drive"
"""The request written beside a handed-over start: "the partition's holder drives it"."""

MAX_BATCH = 500


class Handoff(NamedTuple):
    new: NewSaga
    definition: str
    input: Any
    ticket: Ticket


class StartHandoff:
    """A thread writing handed-over starts in batches. ``on_written(saga_id)`` runs before a
    saga is written (its end is followed from then on), ``on_refused(saga_id)`` if it was not
    started after all."""

    def __init__(self, store: Any, requested_by: str, *,
                 on_written: Callable[[str], None],
                 on_refused: Callable[[str], None]) -> None:
        self.store = store
        self.requested_by = requested_by
        self.on_written = on_written
        self.on_refused = on_refused
        self._queue: queue.SimpleQueue[Handoff | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def put(self, handoff: Handoff) -> None:
        with self._lock:
            if self._closed:
                handoff.ticket.resolve(error=RuntimeError("this runtime is closed"))
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="sagactor-handoff")
                self._thread.start()
        self._queue.put(handoff)

    def close(self, timeout: float) -> None:
        """Write what is queued, then stop."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[Handoff]) -> None:
        for handoff in batch:
            self.on_written(handoff.new.saga_id)
        try:
            results = self.store.write([h.new for h in batch], [])
        except BaseException as exc:
            for handoff in batch:
                self.on_refused(handoff.new.saga_id)
                handoff.ticket.resolve(error=exc)
            return
        for handoff, (created, header) in zip(batch, results, strict=True):
            saga_id = handoff.new.saga_id
            try:
                if created:
                    self.store.request(saga_id, DRIVE, {"requested_by": self.requested_by})
                elif header.definition != handoff.definition:
                    raise IdConflict(f"saga id {saga_id!r} exists with a different flow "
                                     "definition")
                elif canonical(header.input) != canonical(handoff.input):
                    raise IdConflict(f"saga id {saga_id!r} exists with different input")
            except BaseException as exc:
                if not created:
                    self.on_refused(saga_id)
                else:  # written without its request: the holder's sweep finds it
                    log.warning("saga %s was written but its holder could not be told (%s); "
                                "the holder finds it within seconds", saga_id, exc)
                    handoff.ticket.resolve((saga_id, True))
                    continue
                handoff.ticket.resolve(error=exc)
                continue
            handoff.ticket.resolve((saga_id, created))
