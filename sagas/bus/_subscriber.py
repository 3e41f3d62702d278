"""One subscription of the event bus: its handle (:class:`Subscription`) and its actor.

Each subscription runs as one pykka actor (one thread). The bus's reader thread tells it pages
of deliveries (:class:`Page`), at most a few at a time; the actor calls the handler on each
delivery in order, then moves the subscription's cursor past it. The durable cursor (in the
store) is saved *after* the handler returns — when the actor's mailbox is empty, and at least
every :data:`SAVE_INTERVAL` seconds while it is busy — so a crash between handling and saving
redelivers those events: delivery is at least once, deduplicate on ``delivery.event_id`` or
``delivery.position``.

A handler that raises is retried on the same delivery, after a backoff that doubles
(``backoff``, ``2 * backoff``... at most :data:`MAX_BACKOFF` s), ``attempts`` times in all;
then the subscription is *parked*: it stops where it is, its cursor just before the failing
event, its status ``parked`` with the error, logged at ERROR. Nothing is skipped:
:meth:`Subscription.resume` (or a restart of the process) retries that event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from actors import fast_inbox

if TYPE_CHECKING:
    from ..stores import Cursors

__all__ = ["MAX_BACKOFF", "SAVE_INTERVAL", "Page", "Resume", "SubscriberActor", "Subscription"]

log = logging.getLogger("sagas.bus")

SAVE_INTERVAL = 0.1
"""Seconds between two saves of a busy subscriber's cursor (an idle one saves at once)."""

MAX_BACKOFF = 5.0
"""The longest wait, in seconds, between two attempts of a failing handler."""


class Page(NamedTuple):
    """Deliveries for a subscriber, in position order, from the log up to ``upto``."""

    epoch: int  # the feed's epoch when sent: a page of an older epoch is dropped
    deliveries: tuple[Any, ...]  # the matching deliveries (maybe none)
    upto: int  # the position of the page's last event: the cursor once all are handled


class Resume(NamedTuple):
    """Take a parked subscription up again from its cursor, with pages of ``epoch``."""

    epoch: int


class Subscription:
    """A subscriber's handle: its name, topics, where it is and whether it runs.

    ``status`` is ``running``, ``parked`` (a handler kept failing: see ``error``; call
    :meth:`resume`) or ``stopped``. ``position`` is the position of the last event handled
    (or skipped as not matching); ``saved`` the one the store's durable cursor holds.
    """

    def __init__(self, name: str, topics: tuple[str, ...], *, position: int,
                 resume: Callable[[Subscription], None]) -> None:
        """Private: made by :meth:`EventBus.subscribe <sagas.bus.EventBus.subscribe>`."""
        self.name = name
        self.topics = topics
        self.status = "running"
        self.error: BaseException | None = None
        self.position = position
        self.saved = position
        self.delivered = 0  # deliveries handled (each redelivery counted)
        self._resume = resume
        # reader-side state, under the bus's lock
        self._epoch = 0
        self._after = position  # the last position sent to the actor
        self._in_flight = 0  # pages sent, not finished
        self._stopping = threading.Event()

    def resume(self) -> None:
        """Take a parked subscription up again: the event it failed on is delivered again
        first. Does nothing to a running one."""
        self._resume(self)

    def __repr__(self) -> str:
        return (f"Subscription({self.name!r}, {list(self.topics)!r}, {self.status}, "
                f"position={self.position})")


class SubscriberActor(pykka.ThreadingActor):
    """Runs one subscription's handler on its own thread. Every hook runs on that thread; a
    handler's exception is retried then parks the subscription, a store error when saving
    the cursor is logged and the save tried again later: nothing escapes to stop the actor."""

    use_daemon_thread = True  # a handler that blocks forever must not keep the process alive

    def __init__(self, subscription: Subscription, handler: Callable[[Any], object], *,
                 store: Cursors, attempts: int, backoff: float,
                 page_done: Callable[[Subscription, int], None],
                 parked: Callable[[Subscription, Exception], None]) -> None:
        super().__init__()
        self._sub = subscription
        self._handler = handler
        self._store = store
        self._attempts = attempts
        self._backoff = backoff
        self._page_done = page_done
        self._parked = parked
        self._epoch = 0
        self._saved_at = time.monotonic()

    @staticmethod
    def _create_actor_inbox() -> Any:
        return fast_inbox()

    def on_start(self) -> None:
        threading.current_thread().name = f"sagactor-subscriber-{self._sub.name}"

    def on_receive(self, message: Any) -> None:
        if type(message) is Page:
            try:
                self._handle_page(message)
            finally:
                self._page_done(self._sub, message.epoch)
        elif type(message) is Resume:
            self._epoch = message.epoch
            log.info("subscriber %s resumed after position %d", self._sub.name,
                     self._sub.position)

    def on_stop(self) -> None:
        self._save()

    def _handle_page(self, page: Page) -> None:
        sub = self._sub
        # a page of an older epoch than the reader's (sent before a park, still queued when
        # resume() came) is dropped: the reader sends those events again, in order
        if page.epoch != sub._epoch or page.epoch != self._epoch or sub.status != "running" \
                or sub._stopping.is_set():
            return  # parked, resumed since, or stopping
        for delivery in page.deliveries:
            if not self._deliver(delivery):
                return
            sub.position = delivery.position
            sub.delivered += 1
            if time.monotonic() - self._saved_at >= SAVE_INTERVAL:
                self._save()
        sub.position = max(sub.position, page.upto)
        if self.actor_inbox.empty() or time.monotonic() - self._saved_at >= SAVE_INTERVAL:
            self._save()

    def _deliver(self, delivery: Any) -> bool:
        """Call the handler until it returns (``True``), the attempts run out (the
        subscription is parked) or the bus stops (``False`` both)."""
        sub = self._sub
        for attempt in range(1, self._attempts + 1):
            if sub._stopping.is_set():
                return False
            try:
                self._handler(delivery)
                return True
            except Exception as exc:
                if attempt == self._attempts:
                    self._save()
                    log.error("subscriber %s parked at position %d (event %s, %s): %d "
                              "attempts failed, the last with %s: %s; its cursor stays "
                              "before it (Subscription.resume() or a restart retries it)",
                              sub.name, delivery.position, delivery.event_id, delivery.topic,
                              attempt, type(exc).__name__, exc, exc_info=exc)
                    self._parked(sub, exc)
                    return False
                delay = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF)
                log.warning("subscriber %s failed on position %d (attempt %d of %d, again "
                            "in %.2fs): %s: %s", sub.name, delivery.position, attempt,
                            self._attempts, delay, type(exc).__name__, exc)
                if sub._stopping.wait(delay):
                    return False
        return False  # pragma: no cover - attempts >= 1

    def _save(self) -> None:
        """Save the cursor if it moved (a failure is logged; the next save carries it)."""
        sub = self._sub
        position = sub.position
        if position == sub.saved:
            return
        try:
            self._store.save_cursor(sub.name, position)
        except Exception:
            log.exception("subscriber %s: saving its cursor (%d) failed; it is tried again "
                          "later", sub.name, position)
            return
        sub.saved = position
        self._saved_at = time.monotonic()
